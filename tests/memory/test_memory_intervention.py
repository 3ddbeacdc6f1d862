"""A request that fits at no setting ends with a clear hand-over to the user, not a fake video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.generation.request import GenerationRequest, RunOptions, join_parameters, split_parameters
from components.generation.worker import Worker, WorkerConfig
from components.memory.planner import MemoryPlanner
from recovery import EnhancedFailureType
from tests.support.memory_engine import capped_engine

MiB = 2**20
CAP = 180 * MiB  # less than the embedded model needs for its smallest video here (~200 MiB)


def test_nothing_fits_ends_with_user_intervention(model_path: Path, tmp_path: Path) -> None:
    """Under 180 MiB even the smallest preview is predicted not to fit: no adjusted try but the streamed decode of
    the kept latents (a decode only), then a clear hand-over.

    The one try runs out of memory in the denoise or the decode (where varies from run to run); on a CPU with AMX
    the native attention sometimes dies of the refused allocation instead (SIGSEGV, 1 run in 3 here), which the
    worker reports as the out-of-memory it is: no crash retry of the same request."""
    planner = MemoryPlanner(tmp_path / "memory.json")
    worker = Worker(WorkerConfig(device="cpu", memory_cap=CAP))
    engine = capped_engine(worker, planner, CAP)

    def attempt(parameters: Any, info: Any) -> Any:
        request, options = split_parameters(parameters)
        return list(worker.run(request, tmp_path / "out.mp4", model_path=model_path, options=options))[-1].output

    params = join_parameters(
        GenerationRequest(prompt="a lantern", num_frames=9, width=512, height=512, steps=2), RunOptions()
    )
    try:
        outcome = engine.run(attempt, params, model_id=params["model_id"])
    finally:
        worker.close()
    assert not outcome.ok and outcome.value is None and not (tmp_path / "out.mp4").exists()
    streamed = {**params, "options": {**params["options"], "streamed_decode": True}}
    tried = [dict(a.parameters) for a in outcome.attempts]
    assert all(p in (params, streamed) for p in tried), "the request was never adjusted or degraded"
    assert tried.count(streamed) <= 1, "only the decode of the kept latents was tried again"
    assert all("OutOfMemoryError" in (a.error or "") for a in outcome.attempts), [a.error for a in outcome.attempts]
    assert outcome.failure is not None and outcome.failure.failure_type is EnhancedFailureType.VRAM_EXHAUSTION
    assert outcome.result is not None and outcome.result.requires_user_action
    assert outcome.result.actionable_steps
    assert outcome.failure.system_state["worker_memory_cap"] == CAP
    assert outcome.api_error()["error"]["type"] == "vram_exhaustion"
