"""CogVideoX, text- and image-to-video: the shapes its pipeline changes silently are corrected first and reported,
its folders are recognised (and refused under the wrong class), its tiny models build the same twice, a learned
size is enforced before the first step, the image conditions the video, decode progress counts the VAE's frame
batches, and requests run through the service."""

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
from components.generation.families.cogvideox import CogVideoX, CogVideoXImageToVideo, build_tiny_cogvideox
from components.generation.pipeline import VideoGenerator
from components.generation.precision import PrecisionChoice
from components.generation.request import GenerationRequest, validate_request
from components.service import GenerationService
from components.views.reports import EMBEDDED_MODEL_NOTE
from recovery.errors import GenerationCancelledError, InvalidParameterError, ModelCompatibilityError

TINY = "kintsugi/tiny-cogvideox-random"
TINY_I2V = "kintsugi/tiny-cogvideox-i2v-random"


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


def test_the_pipeline_alone_turns_13_frames_into_16(generator: VideoGenerator) -> None:
    """Why the rule is 8k+1: an even latent frame count (13 frames → 4 latent frames) decodes to 4k frames."""
    import torch

    frames = generator.pipe(
        **CogVideoX().call_arguments(_request(num_frames=13), None),
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    ).frames[0]
    assert len(frames) == 16


def test_13_frames_are_corrected_to_8k_plus_1_with_a_report() -> None:
    """We make the change first and say so (17, the nearest 8k+1, not the pipeline's silent 16)."""
    checked, corrections = validate_request(_request(num_frames=13))
    assert checked.num_frames == 17
    assert corrections == ["num_frames 13 → 17 (CogVideoX needs 8k+1 frames)"]


def test_a_side_divisible_by_8_but_not_16_is_corrected_with_a_report(generator: VideoGenerator) -> None:
    """72 passes the pipeline's own check (÷8) and crashes in the transformer's 2×2 patches."""
    with pytest.raises(RuntimeError):
        generator.pipe(**CogVideoX().call_arguments(_request(height=72), None), output_type="latent")
    checked, corrections = validate_request(_request(height=72))
    assert checked.height % 16 == 0
    assert corrections == [f"height 72 → {checked.height} (CogVideoX needs sides divisible by 16)"]


def test_a_hub_id_of_the_family_has_its_rules_before_any_download() -> None:
    """A request for a released CogVideoX is corrected to its rules before the model is downloaded."""
    assert type(family_for_model_id("THUDM/CogVideoX-2b")) is CogVideoX
    assert type(family_for_model_id("THUDM/CogVideoX1.5-5B")) is CogVideoX
    assert type(family_for_model_id("THUDM/CogVideoX-5b-I2V")) is CogVideoXImageToVideo
    assert rules_for_model("THUDM/CogVideoX-5b").frame_multiple == 8


@pytest.mark.parametrize(("model_id", "family"), [(TINY, CogVideoX), (TINY_I2V, CogVideoXImageToVideo)])
def test_a_cogvideox_folder_is_recognised(
    tiny_family_model: Callable[[str], Path], model_id: str, family: type[CogVideoX]
) -> None:
    """The family comes from the folder's model_index.json."""
    assert type(family_of_folder(tiny_family_model(model_id), model_id)) is family


@pytest.mark.parametrize(
    ("model_id", "claimed", "says"),
    [(TINY_I2V, "CogVideoXPipeline", "image-to-video model"), (TINY, "CogVideoXImageToVideoPipeline", "no image")],
    ids=["i2v-as-t2v", "t2v-as-i2v"],
)
def test_a_transformer_that_does_not_fit_its_class_is_refused_before_loading(
    tiny_family_model: Callable[[str], Path], tmp_path: Path, model_id: str, claimed: str, says: str
) -> None:
    """Either way round the pipeline would fail only at its first step, with a channel mismatch."""
    copy = tmp_path / "m"
    shutil.copytree(tiny_family_model(model_id), copy)
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "_class_name": claimed}))
    with pytest.raises(ModelCompatibilityError, match=says) as caught:
        family_of_folder(copy, "someone/mislabelled")
    assert caught.value.model_id == "someone/mislabelled"


@pytest.mark.parametrize("model_id", [TINY, TINY_I2V])
def test_the_tiny_model_builds_the_same_files_twice(tmp_path: Path, model_id: str) -> None:
    """Seeded modules: two builds give the same sha256 for every file."""
    from components.generation.embedded_model import build_tiny_model, read_manifest

    first = read_manifest(build_tiny_model(model_id, tmp_path / "a"))["files"]
    second = read_manifest(build_tiny_model(model_id, tmp_path / "b"))["files"]
    assert first == second and any(name.startswith("transformer/") for name in first)


def _image(folder: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    path = folder / f"image-{colour[0]}-{colour[1]}-{colour[2]}.png"
    Image.new("RGB", (64, 64), colour).save(path)
    return path


def test_learned_positions_refuse_another_size_before_the_first_step(tmp_path: Path) -> None:
    """As CogVideoX-5b-I2V at any size but 720×480: refused naming the side, before any step has run."""
    import torch
    from PIL import Image

    pipe = build_tiny_cogvideox(image_to_video=True, learned_positions=True)
    steps: list[int] = []

    def step_end(_pipe: Any, index: int, _timestep: Any, kwargs: dict) -> dict:
        steps.append(index)
        return kwargs

    image = Image.open(_image(tmp_path, (200, 40, 40))).convert("RGB").resize((96, 64))
    with pytest.raises(InvalidParameterError, match="`width` must be 64") as caught:
        CogVideoXImageToVideo().denoise(pipe, _request(width=96), image, torch.Generator().manual_seed(5), step_end)
    assert caught.value.parameter == "width" and steps == []


def test_learned_positions_run_at_their_own_size(tmp_path: Path) -> None:
    """The guard refuses only other sizes: at the learned 64×64 the model denoises."""
    import torch
    from PIL import Image

    pipe = build_tiny_cogvideox(image_to_video=True, learned_positions=True)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(_image(tmp_path, (200, 40, 40))).convert("RGB")
    latents = CogVideoXImageToVideo().denoise(
        pipe, _request(steps=1), image, torch.Generator().manual_seed(5), lambda *args: args[-1]
    )
    assert tuple(latents.shape) == (1, 3, 4, 8, 8)


def test_an_image_is_encoded_by_a_vae_kept_in_float32_beside_bfloat16(
    tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """Where bf16 convolutions are slow the VAE stays float32; the pipeline alone fails to encode the image then
    (it casts the image to the prompt's dtype), so the family has the encoder cast it back."""
    mixed = PrecisionChoice("bfloat16", {"vae": "float32"}, "bf16 convolutions are slow here")
    generator = VideoGenerator(device="cpu", dtype="bfloat16", precision=mixed)
    request = _request(model_id=TINY_I2V, image=str(_image(tmp_path, (200, 40, 40))))
    output = generator.generate(request, tmp_path / "a.mp4", model_path=tiny_family_model(TINY_I2V))
    assert output.frames == 9 and output.component_dtypes == {"vae": "float32"}


def test_the_image_conditions_the_video(tiny_family_model: Callable[[str], Path], tmp_path: Path) -> None:
    """Same seed: the same image gives identical frames, another image different ones."""
    folder = tiny_family_model(TINY_I2V)
    generator = VideoGenerator(device="cpu", dtype="float32")
    red, blue = _image(tmp_path, (200, 40, 40)), _image(tmp_path, (40, 40, 200))
    runs = [
        generator.generate(
            _request(model_id=TINY_I2V, image=str(image)), tmp_path / f"{i}.mp4", model_path=folder
        ).frames_sha256
        for i, image in enumerate((red, red, blue))
    ]
    assert runs[0] == runs[1] != runs[2]


def test_cogvideox_1_5_padding_frames_are_dropped_before_the_decode_as_the_pipeline_does() -> None:
    """1.5's transformer takes latent frames in pairs: 9 frames (3 latent) are denoised as 4, one padding frame in
    front, which the pipeline drops before decoding; so does our decode, and 9 frames come back."""
    import torch

    pipe = build_tiny_cogvideox(version_1_5=True)
    pipe.set_progress_bar_config(disable=True)
    family, request = CogVideoX(), _request(seed=7)
    latents = family.denoise(pipe, request, None, torch.Generator().manual_seed(7), lambda *args: args[-1])
    theirs = pipe(
        **family.call_arguments(request, None), generator=torch.Generator().manual_seed(7), output_type="np"
    ).frames[0]
    with torch.no_grad():
        ours = pipe.video_processor.postprocess_video(family.decode(pipe, latents, request), output_type="np")[0]
    assert latents.shape[1] == 4 and len(ours) == len(theirs) == 9
    assert float(np.abs(np.asarray(ours) - np.asarray(theirs)).max()) <= 1e-5
    assert family.decoder_chunks(pipe, tuple(latents.shape), request) == 1  # the 3 kept frames: one batch


@pytest.mark.parametrize(
    ("frames", "width", "tiling", "chunks"),
    # 17 frames are 5 latent frames: 2 batches; 384 px (48 latent) is wider than a default tile (45): 2 tiles
    [(17, 64, False, 2), (9, 384, True, 2)],
    ids=["untiled", "tiled"],
)
def test_decode_progress_counts_every_frame_batch_and_tile(
    generator: VideoGenerator, folder: Path, tmp_path: Path, frames: int, width: int, tiling: bool, chunks: int
) -> None:
    """Progress and cancel hook the VAE's decoder, called once per batch of two latent frames (per tile when
    tiled): the count announced is the count run, and the default tiles keep the video's size."""
    from components.generation.request import RunOptions

    seen: list[tuple[int, int]] = []
    output = generator.generate(
        _request(num_frames=frames, width=width, steps=1),
        tmp_path / "a.mp4",
        model_path=folder,
        options=RunOptions(vae_tiling=tiling),
        on_decode_step=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(i, chunks) for i in range(1, chunks + 1)]
    assert (output.frames, output.width, output.height) == (frames, width, 64)


def test_a_cancel_between_frame_batches_stops_the_decode(
    generator: VideoGenerator, folder: Path, tmp_path: Path
) -> None:
    """A stop asked for after the first frame batch ends the run before the second: cancelled, no video."""
    decoded: list[int] = []
    with pytest.raises(GenerationCancelledError) as caught:
        generator.generate(
            _request(num_frames=17, steps=1),
            tmp_path / "a.mp4",
            model_path=folder,
            on_decode_step=lambda done, _total: decoded.append(done),
            should_cancel=lambda: bool(decoded),
        )
    assert caught.value.phase == "decode" and decoded == [1]
    assert not (tmp_path / "a.mp4").exists()


@pytest.fixture(scope="module")
def service(offline_service: GenerationService, tiny_family_model: Callable[[str], Path]) -> GenerationService:
    """The session's service (hub a closed port), with copies of the session's tiny CogVideoX models."""
    for model_id in (TINY, TINY_I2V):
        target = offline_service.settings.tiny_model_dir(model_id)
        if not target.exists():
            shutil.copytree(tiny_family_model(model_id), target)
    return offline_service


def test_the_service_runs_the_tiny_cogvideox_with_the_frames_corrected(service: GenerationService) -> None:
    """Through the service: the frame correction is reported first, and the mp4 has the corrected frames."""
    stream = list(
        service.generate(
            {
                "prompt": "a paper boat",
                "width": 64,
                "height": 64,
                "num_frames": 13,
                "steps": 2,
                "seed": 3,
                "model_id": TINY,
            }
        )
    )
    assert [e.message for e in stream if e.kind == "correction"] == ["num_frames 13 → 17 (CogVideoX needs 8k+1 frames)"]
    result = stream[-1].data["result"]
    assert result.request.model_id == TINY and result.output.model_id == TINY and not result.degraded
    assert EMBEDDED_MODEL_NOTE in result.notes  # labelled: random weights make noise
    with imageio.get_reader(result.video_path, format="FFMPEG") as reader:
        frames = list(reader.iter_data())
    assert len(frames) == 17 and frames[0].shape == (64, 64, 3)


def test_the_service_runs_the_tiny_cogvideox_i2v_from_an_image(service: GenerationService, tmp_path: Path) -> None:
    """Through the service with an image: the mp4 has the requested frames and size, made by the I2V model."""
    request = _request(model_id=TINY_I2V, image=str(_image(tmp_path, (200, 40, 40))), seed=3)
    result = service.generate_video(request)
    assert result.request.model_id == TINY_I2V and result.output.model_id == TINY_I2V and not result.degraded
    assert EMBEDDED_MODEL_NOTE in result.notes  # labelled: random weights make noise
    with imageio.get_reader(result.video_path, format="FFMPEG") as reader:
        frames = list(reader.iter_data())
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)
