"""The diffusers adapter, in-process: a real Wan generation written to a real mp4."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from components.generation.pipeline import WanGenerator
from components.generation.request import GenerationRequest
from recovery.errors import GenerationCancelledError, UnsupportedOperationError

REQUEST = GenerationRequest(prompt="a paper boat", width=96, height=64, num_frames=9, steps=2, seed=11)


@pytest.fixture(scope="module")
def generator() -> WanGenerator:
    return WanGenerator(device="cpu")


def _frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [frame for frame in reader.iter_data()]


def test_generation_writes_mp4_with_requested_frames_and_size(
    generator: WanGenerator, tiny_model: Path, tmp_path: Path
) -> None:
    """The mp4 decodes to exactly the requested number of frames at the requested width and height."""
    out = generator.generate(REQUEST, tmp_path / "a.mp4", model_path=tiny_model)
    frames = _frames(tmp_path / "a.mp4")
    assert len(frames) == REQUEST.num_frames == out.frames
    assert frames[0].shape == (REQUEST.height, REQUEST.width, 3)
    assert set(out.timings) == {"load", "denoise", "decode", "export"}
    assert out.steps_completed == REQUEST.steps


def test_same_seed_gives_identical_frames(generator: WanGenerator, tiny_model: Path, tmp_path: Path) -> None:
    """Two runs with the same request and seed produce the same frames, bit for bit."""
    first = generator.generate(REQUEST, tmp_path / "1.mp4", model_path=tiny_model)
    second = generator.generate(REQUEST, tmp_path / "2.mp4", model_path=tiny_model)
    assert first.frames_sha256 == second.frames_sha256
    assert first.denoise_skipped is False and second.denoise_skipped is False


def test_other_seed_gives_other_frames(generator: WanGenerator, tiny_model: Path, tmp_path: Path) -> None:
    """The seed matters (with random weights it is what changes the pixels)."""
    first = generator.generate(REQUEST, tmp_path / "1.mp4", model_path=tiny_model)
    other = generator.generate(
        GenerationRequest(**{**REQUEST.to_dict(), "seed": 12}), tmp_path / "2.mp4", model_path=tiny_model
    )
    assert first.frames_sha256 != other.frames_sha256


def test_progress_reports_every_denoising_step(generator: WanGenerator, tiny_model: Path, tmp_path: Path) -> None:
    """The step callback sees 1..steps in order, and the phases come in the documented order."""
    steps: list[tuple[int, int]] = []
    phases: list[str] = []
    generator.generate(
        GenerationRequest(**{**REQUEST.to_dict(), "steps": 3}),
        tmp_path / "p.mp4",
        model_path=tiny_model,
        on_step=lambda s, n: steps.append((s, n)),
        on_phase=phases.append,
    )
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert phases == ["load", "denoise", "decode", "export"]


def test_cancel_stops_at_the_next_step_and_writes_nothing(
    generator: WanGenerator, tiny_model: Path, tmp_path: Path
) -> None:
    """A cancelled run raises GenerationCancelledError after the step it was in, and leaves no file."""
    with pytest.raises(GenerationCancelledError) as caught:
        generator.generate(
            GenerationRequest(**{**REQUEST.to_dict(), "steps": 5}),
            tmp_path / "c.mp4",
            model_path=tiny_model,
            should_cancel=lambda: True,
        )
    assert caught.value.steps_completed == 1
    assert list(tmp_path.iterdir()) == []


def test_cuda_only_option_is_refused_on_cpu(generator: WanGenerator, tiny_model: Path) -> None:
    """Model CPU offload is a CUDA feature: on the CPU it is an UnsupportedOperationError naming the option."""
    generator.load(tiny_model, REQUEST.model_id)
    with pytest.raises(UnsupportedOperationError, match="model_cpu_offload"):
        generator.enable_model_cpu_offload()
