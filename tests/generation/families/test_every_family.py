"""What every family must do, checked for each registered family on its tiny model (built once per session):
an mp4 of the requested frames and size, seeds that reproduce, a decode of the kept latents equal to the
pipeline's own, and the family's shape rules applied with a report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import pytest

from components.generation.families import FAMILIES, Family
from components.generation.pipeline import VideoGenerator
from components.generation.request import GenerationRequest, validate_request

FAMILY_IDS = [family.name for family in FAMILIES]


@pytest.fixture(scope="module")
def generator() -> VideoGenerator:
    return VideoGenerator(device="cpu", dtype="float32")


def _request(family: Family, image: Path | None, **changes: Any) -> GenerationRequest:
    """A small request that already follows the family's rules: two frame groups, sides of 2 multiples."""
    side = max(64, 2 * family.rules.side_multiple)
    values: dict[str, Any] = dict(
        prompt="a paper boat",
        width=side,
        height=side,
        num_frames=2 * family.rules.frame_multiple + 1,
        steps=max(2, family.rules.min_steps),
        seed=7,
        model_id=family.tiny_model_id,
        image=str(image) if image is not None and family.needs_image else None,
    )
    return GenerationRequest(**{**values, **changes})


def _image(folder: Path, side: int, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    from PIL import Image

    path = folder / f"image-{side}-{colour[0]}.png"
    if not path.exists():
        Image.new("RGB", (side, side), colour).save(path)
    return path


def _mp4_frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return list(reader.iter_data())


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_generates_an_mp4_of_the_requested_frames_and_size(
    family: Family, generator: VideoGenerator, tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    request = _request(family, _image(tmp_path, max(64, 2 * family.rules.side_multiple)))
    output = generator.generate(request, tmp_path / "a.mp4", model_path=tiny_family_model(family.tiny_model_id))
    frames = _mp4_frames(tmp_path / "a.mp4")
    assert len(frames) == request.num_frames == output.frames
    assert frames[0].shape == (request.height, request.width, 3)
    assert output.steps_completed == request.steps
    assert generator.family is family


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_the_same_seed_reproduces_and_another_differs(
    family: Family, generator: VideoGenerator, tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tiny_family_model(family.tiny_model_id)
    request = _request(family, _image(tmp_path, max(64, 2 * family.rules.side_multiple)))
    first = generator.generate(request, tmp_path / "1.mp4", model_path=folder)
    again = generator.generate(request, tmp_path / "2.mp4", model_path=folder)
    other = generator.generate(
        _request(family, Path(request.image or "x"), seed=8), tmp_path / "3.mp4", model_path=folder
    )
    assert first.frames_sha256 == again.frames_sha256 != other.frames_sha256


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_decoding_the_kept_latents_equals_the_pipelines_own_frames(
    family: Family, generator: VideoGenerator, tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    import torch
    from PIL import Image

    folder = tiny_family_model(family.tiny_model_id)
    image_path = _image(tmp_path, max(64, 2 * family.rules.side_multiple))
    request = _request(family, image_path)
    generator.load(folder, family.tiny_model_id)
    pipe = generator.pipe
    image = Image.open(image_path).convert("RGB") if request.image else None

    def keep(_pipe: Any, _index: int, _timestep: Any, kwargs: dict) -> dict:
        return kwargs

    latents = family.denoise(pipe, request, image, torch.Generator().manual_seed(7), keep)
    with torch.no_grad():
        ours = pipe.video_processor.postprocess_video(family.decode(pipe, latents, request), output_type="np")[0]
    theirs = pipe(
        **family.call_arguments(request, image), generator=torch.Generator().manual_seed(7), output_type="np"
    ).frames[0]
    assert np.asarray(ours).shape == np.asarray(theirs).shape
    assert float(np.abs(np.asarray(ours) - np.asarray(theirs)).max()) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_a_shape_off_the_family_rules_is_corrected_with_a_report(family: Family) -> None:
    rules = family.rules
    odd = GenerationRequest(
        prompt="x",
        width=rules.side_multiple * 4 + 8,
        height=64,
        num_frames=rules.frame_multiple + 3,
        model_id=family.tiny_model_id,
    )
    checked, corrections = validate_request(odd)
    assert checked.width % rules.side_multiple == 0 and rules.frames_ok(checked.num_frames)
    assert any(line.startswith(f"width {odd.width} → {checked.width}") for line in corrections)
    assert any(line.startswith(f"num_frames {odd.num_frames} → {checked.num_frames}") for line in corrections)
