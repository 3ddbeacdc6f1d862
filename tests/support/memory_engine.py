"""The recovery engine as the service wires it for memory, around one capped worker (without the service)."""

from __future__ import annotations

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.worker import Worker
from components.memory.adapters import MemoryLadder, PreviewDegrader, WorkerMemoryFreer
from components.memory.hardware import HardwareProbe
from components.memory.planner import MemoryPlanner
from recovery import EnhancedErrorRecovery

__all__ = ["capped_engine"]


def capped_engine(
    worker: Worker, planner: MemoryPlanner, cap: int, model_id: str = EMBEDDED_MODEL_ID
) -> EnhancedErrorRecovery:
    """The memory ladder, the worker's freer, the preview degrader and a probe that sees ``cap`` bytes; no sleeps."""
    freer = WorkerMemoryFreer(worker, planner=planner, model_id=model_id)
    return EnhancedErrorRecovery(
        adjuster=MemoryLadder(planner, budget=cap, freer=freer),
        freer=freer,
        degrader=PreviewDegrader(planner, budget=cap),
        probe=HardwareProbe(cap),
        sleep=lambda _s: None,
    )
