"""The GPU ladder's switches on a real pipeline (the tiny Wan on the CPU): layerwise casting runs here for real, the
group offload call runs through diffusers' real hooks with the CPU as its onload device, and the CUDA-only switches
are refused on the CPU, named."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.generation.optimisations import MemorySwitches, enable_group_offload, parameter_bytes
from components.generation.pipeline import WanGenerator
from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from recovery.errors import UnsupportedOperationError

REQUEST = GenerationRequest(prompt="a red ball", num_frames=9, width=64, height=64, steps=2)


@dataclass
class Runs:
    plain: GenerationOutput
    plain_bytes: int
    cast: GenerationOutput
    cast_bytes: int
    cast_dtypes: set[str]
    after: GenerationOutput  # a plain request after the cast one
    after_bytes: int
    grouped: GenerationOutput  # group offload (block level, onload device: the CPU, no stream)


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """One generator, four runs of 9×64² in 2 steps: plain, layerwise casting, plain again, group offload."""
    out = tmp_path_factory.mktemp("switches")
    generator = WanGenerator(device="cpu")
    plain = generator.generate(REQUEST, out / "plain.mp4", model_path=tiny_model)
    plain_bytes = parameter_bytes(generator.pipe.transformer)
    cast = generator.generate(
        REQUEST, out / "cast.mp4", model_path=tiny_model, options=RunOptions(layerwise_casting=True)
    )
    cast_bytes = parameter_bytes(generator.pipe.transformer)
    dtypes = {str(p.dtype) for p in generator.pipe.transformer.parameters()}
    after = generator.generate(REQUEST, out / "after.mp4", model_path=tiny_model)
    after_bytes = parameter_bytes(generator.pipe.transformer)
    enable_group_offload(generator.pipe, "cpu", use_stream=False)  # the product's call; CUDA streams need CUDA
    grouped = generator.generate(REQUEST, out / "grouped.mp4", model_path=tiny_model)
    yield Runs(plain, plain_bytes, cast, cast_bytes, dtypes, after, after_bytes, grouped)
    generator.unload()


def test_layerwise_casting_makes_the_video_on_the_cpu(runs: Runs) -> None:
    """fp8 storage, bf16 compute: all frames made, written, with the switch recorded in the result."""
    assert runs.cast.frames == REQUEST.num_frames and Path(runs.cast.video_path).stat().st_size > 0
    assert runs.cast.options.layerwise_casting


def test_layerwise_casting_stores_the_transformer_weights_in_fp8(runs: Runs) -> None:
    """The transformer's parameter bytes fall (norms and embeddings stay as they were: diffusers' skip layers)."""
    assert "torch.float8_e4m3fn" in runs.cast_dtypes
    assert runs.cast_bytes < 0.7 * runs.plain_bytes


def test_a_request_without_the_cast_gets_the_plain_model_back(runs: Runs) -> None:
    """The cast hooks cannot be taken off: the pipeline is loaded afresh, and the video is the plain one again."""
    assert runs.after_bytes == runs.plain_bytes
    assert runs.after.frames_sha256 == runs.plain.frames_sha256


def test_group_offload_through_diffusers_hooks_keeps_the_video(runs: Runs) -> None:
    """Block-level group offload (one block per group) changes where weights live, not what is computed."""
    assert runs.grouped.frames_sha256 == runs.plain.frames_sha256


@pytest.mark.parametrize("name", ["group_offload", "sequential_offload"])
def test_a_cuda_only_switch_is_refused_on_the_cpu_by_name(name: str) -> None:
    """Refused before anything changes, naming the switch and the device (as model offload always was)."""
    switches = MemorySwitches()
    options = RunOptions(**{name: True})
    with pytest.raises(UnsupportedOperationError, match=rf"`{name}` needs a CUDA device \(got device 'cpu'\)"):
        switches.apply(object(), options, "cpu")
    assert switches.applied == set()


def test_two_offloads_at_once_are_refused() -> None:
    """diffusers cannot stack offload hooks: asking for two is an error naming both."""
    with pytest.raises(UnsupportedOperationError, match="group_offload, sequential_offload"):
        MemorySwitches().apply(object(), RunOptions(group_offload=True, sequential_offload=True), "cuda")


@pytest.mark.parametrize(
    "applied, offloaded, options, reload",
    [
        (set(), False, RunOptions(layerwise_casting=True), False),
        ({"layerwise_casting"}, False, RunOptions(layerwise_casting=True), False),
        ({"layerwise_casting"}, False, RunOptions(), True),
        ({"group_offload"}, False, RunOptions(group_offload=True, layerwise_casting=True), False),
        (set(), True, RunOptions(group_offload=True), True),
        (set(), True, RunOptions(model_cpu_offload=True), False),
    ],
)
def test_a_pipeline_is_reloaded_only_when_it_carries_a_hook_not_wanted(
    applied: set[str], offloaded: bool, options: RunOptions, reload: bool
) -> None:
    """A hook the request does not want, or another offload than the one in place, needs a fresh load."""
    assert MemorySwitches(set(applied)).needs_reload(options, model_offloaded=offloaded) is reload
