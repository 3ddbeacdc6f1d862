"""Out-of-memory recovered for real: a worker capped at 340 MiB, the recovery engine, and the memory ladder.

A decode out-of-memory retried from the kept latents (the streamed decode) is tested for every family, under each
family's cap, in ``tests/generation/families/test_decode_recovery.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.generation.request import GenerationRequest, RunOptions, join_parameters, split_parameters
from components.generation.worker import Worker, WorkerConfig
from components.memory.ladder import plan_memory
from components.memory.planner import MemoryPlanner
from recovery import EnhancedErrorRecovery, EnhancedFailureType
from tests.support.memory_engine import capped_engine

MiB = 2**20
CAP = 340 * MiB
STEPS = 2


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    """One worker for the module (each start costs ~5 s), capped at 340 MiB of address space."""
    capped = Worker(WorkerConfig(device="cpu", dtype="bfloat16", memory_cap=CAP))
    capped.start()
    yield capped
    capped.close()


@pytest.fixture
def planner(tmp_path: Path) -> MemoryPlanner:
    """The shipped calibration of the embedded model, learning into a fresh file."""
    return MemoryPlanner(tmp_path / "memory.json")


def engine_for(worker: Worker, planner: MemoryPlanner) -> EnhancedErrorRecovery:
    return capped_engine(worker, planner, CAP)


def attempt(worker: Worker, planner: MemoryPlanner, model_path: Path, out_dir: Path):
    """The service's attempt function in small: run in the worker, teach the planner what fitted."""

    def run(parameters: Any, info: Any) -> Any:
        request, options = split_parameters(parameters)
        events = list(worker.run(request, out_dir / f"try-{info.number}.mp4", model_path=model_path, options=options))
        planner.record(request, options, None, True, memory_cap=CAP)
        return events[-1].output

    return run


def request(frames: int, side: int) -> GenerationRequest:
    return GenerationRequest(
        prompt="a lantern in the rain", num_frames=frames, width=side, height=side, steps=STEPS, seed=7
    )


@pytest.fixture(scope="module")
def over_the_cap(worker: Worker, model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """One 33×384² request through the engine, run once for the module: its outcome, and the planner it taught."""
    folder = tmp_path_factory.mktemp("over-the-cap")
    taught = MemoryPlanner(folder / "memory.json")
    params = join_parameters(request(33, 384), RunOptions())
    outcome = engine_for(worker, taught).run(
        attempt(worker, taught, model_path, folder), params, model_id=params["model_id"]
    )
    return taught, outcome


def test_request_over_the_cap_yields_a_video_within_two_adjusted_tries(over_the_cap: tuple[Any, Any]) -> None:
    """33×384² needs ~445 MiB here (tiled more): the first OOM is followed by a video within two adjusted tries —
    the lowered setting predicted to fit, after (when the OOM came in the decode) the streamed decode of the kept
    latents, which gives the full video when it fits and costs one decode when it does not."""
    _taught, outcome = over_the_cap
    assert outcome.ok and len(outcome.attempts) in (2, 3), outcome.changes
    assert outcome.attempts[0].failure_type is EnhancedFailureType.VRAM_EXHAUSTION
    assert not outcome.degraded
    video = outcome.value
    assert Path(video.video_path).stat().st_size > 0
    if (video.frames, video.width, video.height) == (33, 384, 384):  # the streamed decode fitted
        assert video.denoise_skipped and video.options.streamed_decode and len(outcome.attempts) == 2
        return
    if len(outcome.attempts) == 3:
        assert "the kept latents are decoded again: denoising is not repeated" in outcome.changes
    assert any(
        line.startswith(("num_frames 33 → ", "resolution 384×384 → ")) and "to fit in 340 MiB" in line
        for line in outcome.changes
    ), outcome.changes


def test_the_next_similar_request_starts_from_what_fits(
    worker: Worker, over_the_cap: tuple[Any, Any], model_path: Path, tmp_path: Path
) -> None:
    """After an OOM taught the planner, planning the same request again adjusts it before running."""
    planner, _outcome = over_the_cap
    plan = plan_memory(planner, request(33, 384), RunOptions(), CAP)
    assert plan.changes and plan.request != request(33, 384)
    assert all(line.startswith("planned before running: ") for line in plan.changes)
    worker.restart()  # the calibration is for a worker holding only its model
    events = list(worker.run(plan.request, tmp_path / "planned.mp4", model_path=model_path, options=plan.options))
    assert events[-1].kind == "result", plan
