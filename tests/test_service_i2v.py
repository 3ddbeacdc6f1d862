"""Image-to-video through ``GenerationService``: an image a model does not take (or one at another size) is refused
before anything runs; on an image-to-video model the image really conditions the run (same seed and image: the
same frames; another image: other frames), its preparation is reported, and its journaled request finds the image
again for a re-run after a restart."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from components.generation.images import attach_image, prepare_image
from components.generation.request import GenerationRequest
from components.journal import RequestState
from components.service import GenerationService
from components.settings import Settings
from recovery.errors import GenerationFailedError
from tests.support.app_process import free_port

I2V = "kintsugi/tiny-wan-i2v-random"
T2V = "kintsugi/tiny-wan-random"
REQUEST = GenerationRequest(prompt="a paper boat", width=64, height=64, num_frames=5, steps=2, seed=7)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    """A started service on a fresh data folder (the hub a closed port)."""
    data_dir = tmp_path_factory.mktemp("i2v")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        with GenerationService(settings) as started:
            yield started


def _png(colour: str, size: tuple[int, int] = (80, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_text_to_video_model_with_an_image_is_refused_before_running(service: GenerationService) -> None:
    """An image for the Wan text-to-video model: refused at admission naming ``image`` and the model, journaled as
    refused (no request kept, no attempt), no video written."""
    path, _ = prepare_image(_png("red"), 64, 64, service.settings.uploads_dir)
    request = GenerationRequest(**{**REQUEST.to_dict(), "model_id": T2V, "image": path})
    videos = set(service.settings.outputs_dir.glob("*.mp4"))
    with pytest.raises(GenerationFailedError) as caught:
        list(service.generate(request))
    error = caught.value.report["error"]
    assert error["type"] == "invalid_parameters"
    assert "`image` is not taken by kintsugi/tiny-wan-random" in error["message"]
    assert str(service.settings.data_dir) not in str(caught.value.report)
    entry = service.request_status(caught.value.correlation_id)
    assert entry is not None and entry.status is RequestState.FAILED and entry.request is None
    assert service.metrics.summary()["refused"] >= 1
    assert set(service.settings.outputs_dir.glob("*.mp4")) == videos


def test_the_plan_notice_refuses_it_too(service: GenerationService) -> None:
    """Asked before Generate, the service gives the same refusal (nothing journaled)."""
    path, _ = prepare_image(_png("red"), 64, 64, service.settings.uploads_dir)
    with pytest.raises(GenerationFailedError) as caught:
        service.plan_notice(GenerationRequest(**{**REQUEST.to_dict(), "model_id": T2V, "image": path}))
    assert "`image` is not taken by kintsugi/tiny-wan-random" in caught.value.report["error"]["message"]


def test_an_image_not_at_the_requests_size_is_refused_before_running(service: GenerationService) -> None:
    """An image prepared for another size (the request changed since) is refused naming ``image``, before the
    model (here an unknown hub id) is even looked for."""
    path, _ = prepare_image(_png("red"), 32, 32, service.settings.uploads_dir)
    request = GenerationRequest(**{**REQUEST.to_dict(), "model_id": "someone/some-i2v-model", "image": path})
    with pytest.raises(GenerationFailedError) as caught:
        list(service.generate(request))
    message = caught.value.report["error"]["message"]
    assert "`image` must be prepared at the request's size 64×64" in message and "32×32" in message
    assert caught.value.report["error"]["recovery_attempted"] is False


# -- on the image-to-video model ----------------------------------------------------------------------------------
def _run(service: GenerationService, colour: str, seed: int = 7):  # -> GenerationResult
    request, corrections = attach_image(
        GenerationRequest(**{**REQUEST.to_dict(), "model_id": I2V, "seed": seed}),
        _png(colour),
        service.settings.uploads_dir,
    )
    return service.generate_video(request, corrections=corrections)


def test_the_same_seed_and_image_give_the_same_frames(service: GenerationService) -> None:
    """Two runs with the same seed and the same image make identical frames."""
    first, again = _run(service, "red"), _run(service, "red")
    assert first.output.frames_sha256 == again.output.frames_sha256
    assert (first.output.frames, first.output.width, first.output.height) == (5, 64, 64)


def test_another_image_gives_other_frames(service: GenerationService) -> None:
    """With the same seed, another image makes other frames: the image conditions the run (random weights make
    noise, so this checks the conditioning path, not the look)."""
    assert _run(service, "red").output.frames_sha256 != _run(service, "blue").output.frames_sha256


def test_the_images_preparation_is_reported_with_the_corrections(service: GenerationService) -> None:
    """The crop and resize to the request's size is one of the result's corrections; the result names the model."""
    result = _run(service, "green")
    assert "image 80×48 → cropped and resized to 64×64" in result.corrections
    assert result.request.model_id == I2V
    assert result.to_dict()["request"]["image"] == Path(result.request.image or "").name


def test_an_image_to_video_model_without_an_image_is_refused_before_running(service: GenerationService) -> None:
    """The image-to-video model with no image: refused at admission naming ``image``."""
    with pytest.raises(GenerationFailedError) as caught:
        list(service.generate(GenerationRequest(**{**REQUEST.to_dict(), "model_id": I2V})))
    assert "`image` is required by kintsugi/tiny-wan-i2v-random" in caught.value.report["error"]["message"]


def test_a_journaled_request_finds_its_image_for_a_rerun(service: GenerationService) -> None:
    """The journal keeps the request with its prepared image's path in the uploads folder; a request left
    unfinished by a stop is re-run from it and completes."""
    request, _ = attach_image(
        GenerationRequest(**{**REQUEST.to_dict(), "model_id": I2V}), _png("purple"), service.settings.uploads_dir
    )
    assert Path(request.image or "").parent == service.settings.uploads_dir
    service.journal.accept("i2v-rerun", request.to_dict())  # as the app had journaled it before it was stopped
    assert service.reconcile() == ["i2v-rerun"]
    deadline = time.monotonic() + 120
    while (entry := service.request_status("i2v-rerun")) is not None and not entry.finished:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert entry is not None and entry.status is RequestState.COMPLETED, entry
    assert entry.request is not None and entry.request["image"] == request.image
