"""The diffusers adapter, in-process: a real Wan generation written to a real mp4."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from components.generation.pipeline import WanGenerator
from components.generation.request import GenerationRequest, RunOptions
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
    """A cancel during a step raises GenerationCancelledError after the step it was in, and leaves no file."""
    steps: list[int] = []
    with pytest.raises(GenerationCancelledError) as caught:
        generator.generate(
            GenerationRequest(**{**REQUEST.to_dict(), "steps": 5}),
            tmp_path / "c.mp4",
            model_path=tiny_model,
            on_step=lambda s, n: steps.append(s),
            should_cancel=lambda: bool(steps),
        )
    assert (caught.value.phase, caught.value.steps_completed) == ("denoise", 1)
    assert list(tmp_path.iterdir()) == []


def test_cancel_before_the_first_step_runs_none(generator: WanGenerator, tiny_model: Path, tmp_path: Path) -> None:
    """A cancel already there when the model is loaded stops the run before it denoises at all."""
    before = generator.denoise_steps_run
    with pytest.raises(GenerationCancelledError) as caught:
        generator.generate(REQUEST, tmp_path / "c.mp4", model_path=tiny_model, should_cancel=lambda: True)
    assert (caught.value.phase, caught.value.steps_completed) == ("load", 0)
    assert generator.denoise_steps_run == before


def test_cancel_during_decode_stops_before_the_next_chunk(
    generator: WanGenerator, tiny_model: Path, tmp_path: Path
) -> None:
    """A cancel after the first decoder chunk stops the decode there; the latents are dropped, not kept for a
    retry, so the same request denoises again."""
    chunks: list[tuple[int, int]] = []
    with pytest.raises(GenerationCancelledError) as caught:
        generator.generate(
            REQUEST,
            tmp_path / "c.mp4",
            model_path=tiny_model,
            on_decode_step=lambda s, n: chunks.append((s, n)),
            should_cancel=lambda: bool(chunks),
        )
    assert caught.value.phase == "decode" and caught.value.steps_completed == REQUEST.steps
    assert chunks == [(1, 3)]  # 9 frames are 3 latent frames
    assert list(tmp_path.iterdir()) == []
    again = generator.generate(REQUEST, tmp_path / "again.mp4", model_path=tiny_model)
    assert again.denoise_skipped is False


@pytest.mark.parametrize(
    ("width", "height", "tiling", "chunks"),
    [(96, 64, False, 3), (320, 320, True, 12)],
    ids=["whole frames", "tiled"],
)
def test_chunked_decode_gives_the_pipelines_own_frames(
    generator: WanGenerator, tiny_model: Path, tmp_path: Path, width: int, height: int, tiling: bool, chunks: int
) -> None:
    """Decoding chunk by chunk (progress, cancel checks) gives exactly the frames ``WanPipeline`` itself makes for
    the same seed, and reports every decoder call: one per latent frame, per tile when tiled (320² is 2×2)."""
    import hashlib

    import torch

    request = GenerationRequest(**{**REQUEST.to_dict(), "width": width, "height": height})
    seen: list[tuple[int, int]] = []
    ours = generator.generate(
        request,
        tmp_path / "ours.mp4",
        model_path=tiny_model,
        options=RunOptions(vae_tiling=tiling),
        on_decode_step=lambda s, n: seen.append((s, n)),
        should_cancel=lambda: False,
    )
    try:
        video = generator.pipe(
            prompt=request.prompt,
            height=height,
            width=width,
            num_frames=request.num_frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(int(request.seed or 0)),
            output_type="np",
        ).frames[0]
    finally:
        generator.enable_vae_tiling(False)
    theirs = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
    assert hashlib.sha256(theirs.tobytes()).hexdigest() == ours.frames_sha256
    assert seen == [(i, chunks) for i in range(1, chunks + 1)]


def test_cuda_only_option_is_refused_on_cpu(generator: WanGenerator, tiny_model: Path) -> None:
    """Model CPU offload is a CUDA feature: on the CPU it is an UnsupportedOperationError naming the option."""
    generator.load(tiny_model, REQUEST.model_id)
    with pytest.raises(UnsupportedOperationError, match="model_cpu_offload"):
        generator.enable_model_cpu_offload()


def test_a_vae_that_decodes_to_one_flat_grey_is_a_failure_not_a_video(tiny_model: Path, tmp_path: Path) -> None:
    """The trap measured with Allegro below its tile size: every pixel one grey. The black-frame check does not
    see it; the flat-frame check does, and no mp4 is written."""
    import torch

    from recovery.errors import BadOutputError

    generator = WanGenerator(device="cpu")
    generator.load(tiny_model, REQUEST.model_id)
    with torch.no_grad():  # the decoder's last convolution now outputs 0 everywhere: (0 + 1) / 2 = mid grey
        generator.pipe.vae.decoder.conv_out.weight.zero_()
        generator.pipe.vae.decoder.conv_out.bias.zero_()
    with pytest.raises(BadOutputError, match="flat colour") as caught:
        generator.generate(REQUEST, tmp_path / "grey.mp4", model_path=tiny_model)
    assert caught.value.reason == "flat frames" and caught.value.phase == "decode"
    assert not (tmp_path / "grey.mp4").exists()
