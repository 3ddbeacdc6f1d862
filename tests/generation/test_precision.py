"""Precision per component: a dtype the hardware is slow in is not used for the convolution-heavy VAE."""

from __future__ import annotations

import json
from pathlib import Path

from components.generation.pipeline import VideoGenerator
from components.generation.precision import PrecisionChoice, PrecisionProbe, choose_precision, probe_speeds
from components.generation.request import GenerationRequest


def test_a_dtype_much_slower_than_fp32_moves_the_vae_to_fp32_and_says_why() -> None:
    choice = choose_precision("bfloat16", {"float32": 0.001, "bfloat16": 0.160})
    assert choice.of("vae") == "float32" and choice.of("transformer") == "bfloat16"
    assert "160× slower" in choice.reason


def test_a_fast_dtype_is_kept_for_every_component() -> None:
    choice = choose_precision("bfloat16", {"float32": 0.001, "bfloat16": 0.0012})
    assert choice.components == {} and choice.reason == ""


def test_the_probe_times_a_real_convolution_per_dtype() -> None:
    speeds = probe_speeds("cpu")
    assert set(speeds) == {"float32", "bfloat16"} and all(0 < s < 5 for s in speeds.values())


def test_the_probe_runs_once_per_machine_and_is_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "probe.json"
    first = PrecisionProbe(path).speeds("cpu")
    stored = json.loads(path.read_text())
    (key,) = stored
    path.write_text(json.dumps({key: {"float32": 1.0, "bfloat16": 9.0}}))
    assert first and PrecisionProbe(path).speeds("cpu") == {"float32": 1.0, "bfloat16": 9.0}
    assert PrecisionProbe(path).choose("cpu", "bfloat16").of("vae") == "float32"


def test_a_generator_runs_its_vae_in_the_chosen_dtype_and_the_output_says_so(tiny_model: Path, tmp_path: Path) -> None:
    note = "the VAE ran in float32: bfloat16 3D convolutions are 50× slower than float32 on this machine"
    generator = VideoGenerator(
        device="cpu", dtype="bfloat16", precision=PrecisionChoice("bfloat16", {"vae": "float32"}, note)
    )
    request = GenerationRequest(prompt="a kite", width=64, height=64, num_frames=5, steps=1, seed=3)
    output = generator.generate(request, tmp_path / "a.mp4", model_path=tiny_model)
    assert (
        str(generator.pipe.vae.dtype) == "torch.float32" and str(generator.pipe.transformer.dtype) == "torch.bfloat16"
    )
    assert output.component_dtypes == {"vae": "float32"} and output.precision_note == note
    assert output.frames == 5
