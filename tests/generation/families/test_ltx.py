"""LTX-Video: the shapes its pipeline changes silently are corrected first and reported, its folders are
recognised, its tiny model builds the same twice, a 0.9.1-like VAE (timestep conditioning, decode noise) decodes
the kept latents exactly as the pipeline does, decode progress counts the VAE's tiles, and a request runs through
the service."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import pytest

from components.generation.families import family_for_model_id, family_of_folder, rules_for_model
from components.generation.families.ltx import LTXVideo, build_tiny_ltx, image_to_video
from components.generation.pipeline import VideoGenerator
from components.generation.precision import PrecisionChoice
from components.generation.request import GenerationRequest, RunOptions, validate_request
from components.service import GenerationService
from components.views.reports import EMBEDDED_MODEL_NOTE
from recovery.errors import GenerationCancelledError

TINY = "kintsugi/tiny-ltx-random"


@pytest.fixture(scope="module")
def folder(tiny_family_model: Callable[[str], Path]) -> Path:
    return tiny_family_model(TINY)


@pytest.fixture(scope="module")
def generator(folder: Path) -> VideoGenerator:
    generator = VideoGenerator(device="cpu", dtype="float32")
    generator.load(folder, TINY)
    return generator


def _request(**changes: Any) -> GenerationRequest:
    values: dict[str, Any] = dict(prompt="a paper boat", width=64, height=64, num_frames=9, steps=2, seed=5)
    return GenerationRequest(**{**values, "model_id": TINY, **changes})


def _keep(_pipe: Any, _index: int, _timestep: Any, kwargs: dict) -> dict:
    return kwargs


def test_the_pipeline_alone_floors_12_frames_to_9(generator: VideoGenerator) -> None:
    """Why the rule is 8k+1: the VAE compresses time 8×, and the pipeline floors the frame count without a word."""
    import torch

    frames = generator.pipe(
        **LTXVideo().call_arguments(_request(num_frames=12), None),
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    ).frames[0]
    assert len(frames) == 9


def test_12_frames_are_corrected_to_9_with_a_report() -> None:
    """We make the change first and say so."""
    checked, corrections = validate_request(_request(num_frames=12))
    assert checked.num_frames == 9
    assert corrections == ["num_frames 12 → 9 (LTX-Video needs 8k+1 frames)"]


def test_a_side_not_divisible_by_32_is_corrected_with_a_report(generator: VideoGenerator) -> None:
    """48 (÷16, the default rule) is refused by the pipeline; the family's rule corrects it before the run."""
    with pytest.raises(ValueError, match="divisible by 32"):
        generator.pipe(**LTXVideo().call_arguments(_request(height=48), None), output_type="latent")
    checked, corrections = validate_request(_request(height=48))
    assert checked.height == 64
    assert corrections == ["height 48 → 64 (LTX-Video needs sides divisible by 32)"]


def test_one_step_is_corrected_to_two_with_a_report(generator: VideoGenerator) -> None:
    """One step fails in the scheduler (its terminal stretch divides by zero), so the family needs two."""
    with pytest.warns(RuntimeWarning, match="divide"), pytest.raises(IndexError):
        generator.pipe(**LTXVideo().call_arguments(_request(steps=1), None), output_type="latent")
    checked, corrections = validate_request(_request(steps=1))
    assert checked.steps == 2
    assert corrections == ["steps 1 → 2 (LTX-Video needs at least 2)"]


def test_a_hub_id_of_the_family_has_its_rules_before_any_download() -> None:
    """A request for the released LTX-Video is corrected to its rules before the model is downloaded."""
    assert isinstance(family_for_model_id("Lightricks/LTX-Video"), LTXVideo)
    assert rules_for_model("Lightricks/LTX-Video").side_multiple == 32


def test_an_ltx_folder_is_recognised(folder: Path) -> None:
    """The family comes from the folder's model_index.json."""
    assert isinstance(family_of_folder(folder, TINY), LTXVideo)


def test_a_folder_saved_by_the_image_to_video_pipeline_is_ltx_too(folder: Path, tmp_path: Path) -> None:
    """Both pipelines save the same components; the index names the one that saved them."""
    copy = tmp_path / "i2v"
    shutil.copytree(folder, copy)
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "_class_name": "LTXImageToVideoPipeline"}))
    assert isinstance(family_of_folder(copy, "someone/ltx-i2v"), LTXVideo)


def test_the_tiny_model_builds_the_same_files_twice(tmp_path: Path) -> None:
    """Seeded modules: two builds give the same sha256 for every file."""
    from components.generation.embedded_model import build_tiny_model, read_manifest

    first = read_manifest(build_tiny_model(TINY, tmp_path / "a"))["files"]
    second = read_manifest(build_tiny_model(TINY, tmp_path / "b"))["files"]
    assert first == second and any(name.startswith("vae/") for name in first)


@pytest.fixture(scope="module")
def timestep_aware() -> Any:
    """An LTX pipeline whose VAE has timestep conditioning, as LTX-Video 0.9.1 and later."""
    pipe = build_tiny_ltx(timestep_conditioning=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.timestep_conditioning
    return pipe


def _decoded(pipe: Any, latents: Any, request: GenerationRequest) -> np.ndarray:
    import torch

    with torch.no_grad():
        video = LTXVideo().decode(pipe, latents, request)
        return np.asarray(pipe.video_processor.postprocess_video(video, output_type="np")[0])


def test_a_timestep_aware_vae_decodes_the_kept_latents_as_the_pipeline_does(timestep_aware: Any) -> None:
    """Its decode mixes in noise from the call's generator after denoising; we draw the same noise again."""
    import torch

    family, request = LTXVideo(), _request(seed=7)
    latents = family.denoise(timestep_aware, request, None, torch.Generator().manual_seed(7), _keep)
    theirs = timestep_aware(
        **family.call_arguments(request, None), generator=torch.Generator().manual_seed(7), output_type="np"
    ).frames[0]
    assert float(np.abs(_decoded(timestep_aware, latents, request) - np.asarray(theirs)).max()) <= 1e-5


def test_the_decode_noise_comes_from_the_request_seed(timestep_aware: Any) -> None:
    """Decoding the same latents again gives the same frames (a decode retry); another seed's noise differs."""
    import torch

    family, request = LTXVideo(), _request(seed=7)
    latents = family.denoise(timestep_aware, request, None, torch.Generator().manual_seed(7), _keep)
    first, again = _decoded(timestep_aware, latents, request), _decoded(timestep_aware, latents, request)
    other = _decoded(timestep_aware, latents, _request(seed=8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def _image(folder: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    path = folder / f"image-{colour[0]}-{colour[1]}-{colour[2]}.png"
    Image.new("RGB", (64, 64), colour).save(path)
    return path


def test_image_to_video_decodes_the_kept_latents_as_its_pipeline_does(timestep_aware: Any, tmp_path: Path) -> None:
    """With an image the generator draws the image latent's sample first; the decode noise replays that too."""
    import torch
    from PIL import Image

    family, request = LTXVideo(), _request(seed=7, image=str(_image(tmp_path, (200, 40, 40))))
    image = Image.open(request.image or "").convert("RGB")
    latents = family.denoise(timestep_aware, request, image, torch.Generator().manual_seed(7), _keep)
    theirs = image_to_video(timestep_aware)(
        **family.call_arguments(request, image), generator=torch.Generator().manual_seed(7), output_type="np"
    ).frames[0]
    assert float(np.abs(_decoded(timestep_aware, latents, request) - np.asarray(theirs)).max()) <= 1e-5


def test_an_image_is_encoded_by_a_vae_kept_in_float32_beside_bfloat16(
    tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """Where bf16 convolutions are slow the VAE stays float32; the pipeline alone fails to encode the image then
    (it casts the image to the prompt's dtype), so the family has the encoder cast it back."""
    mixed = PrecisionChoice("bfloat16", {"vae": "float32"}, "bf16 convolutions are slow here")
    generator = VideoGenerator(device="cpu", dtype="bfloat16", precision=mixed)
    request = _request(model_id=TINY, image=str(_image(tmp_path, (200, 40, 40))))
    output = generator.generate(request, tmp_path / "a.mp4", model_path=tiny_family_model(TINY))
    assert output.frames == 9 and output.component_dtypes == {"vae": "float32"}


def test_the_image_conditions_the_video(generator: VideoGenerator, folder: Path, tmp_path: Path) -> None:
    """Same seed: the same image gives identical frames, another image different ones."""
    red, blue = _image(tmp_path, (200, 40, 40)), _image(tmp_path, (40, 40, 200))
    runs = [
        generator.generate(_request(image=str(image)), tmp_path / f"{i}.mp4", model_path=folder).frames_sha256
        for i, image in enumerate((red, red, blue))
    ]
    assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize(
    ("width", "tiling", "chunks"),
    # 544 px (17 latent) is wider than a default tile (512 px, 16 latent; stride 14): 2 tiles
    [(64, False, 1), (544, True, 2)],
    ids=["untiled", "tiled"],
)
def test_decode_progress_counts_every_tile(
    generator: VideoGenerator, folder: Path, tmp_path: Path, width: int, tiling: bool, chunks: int
) -> None:
    """Progress and cancel hook the VAE's decoder, called once (per tile when tiled): the count announced is the
    count run, and the tiles keep the video's size."""
    seen: list[tuple[int, int]] = []
    output = generator.generate(
        _request(width=width),
        tmp_path / "a.mp4",
        model_path=folder,
        options=RunOptions(vae_tiling=tiling),
        on_decode_step=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(i, chunks) for i in range(1, chunks + 1)]
    assert (output.frames, output.width, output.height) == (9, width, 64)


def test_a_cancel_between_tiles_stops_the_decode(generator: VideoGenerator, folder: Path, tmp_path: Path) -> None:
    """A stop asked for after the first tile ends the run before the second: cancelled, no video."""
    decoded: list[int] = []
    with pytest.raises(GenerationCancelledError) as caught:
        generator.generate(
            _request(width=544),
            tmp_path / "a.mp4",
            model_path=folder,
            options=RunOptions(vae_tiling=True),
            on_decode_step=lambda done, _total: decoded.append(done),
            should_cancel=lambda: bool(decoded),
        )
    assert caught.value.phase == "decode" and decoded == [1]
    assert not (tmp_path / "a.mp4").exists()


@pytest.fixture(scope="module")
def service(offline_service: GenerationService, folder: Path) -> GenerationService:
    """The session's service (hub a closed port), with a copy of the session's tiny LTX-Video in its data folder."""
    target = offline_service.settings.tiny_model_dir(TINY)
    if not target.exists():
        shutil.copytree(folder, target)
    return offline_service


def test_the_service_runs_the_tiny_ltx_with_the_frames_corrected(service: GenerationService) -> None:
    """Through the service: the frame correction is reported first, and the mp4 has the corrected frames."""
    request = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 12, "steps": 2, "seed": 3}
    stream = list(service.generate({**request, "model_id": TINY}))
    assert [e.message for e in stream if e.kind == "correction"] == ["num_frames 12 → 9 (LTX-Video needs 8k+1 frames)"]
    result = stream[-1].data["result"]
    assert result.request.model_id == TINY and result.output.model_id == TINY and not result.degraded
    assert EMBEDDED_MODEL_NOTE in result.notes  # labelled: random weights make noise
    with imageio.get_reader(result.video_path, format="FFMPEG") as reader:
        frames = list(reader.iter_data())
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)
