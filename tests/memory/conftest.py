"""Fixtures for the memory tests: the embedded model built once, capped workers, a planner with known numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from components.memory.calibration import Measurement
from components.memory.planner import MemoryPlanner

MiB = 2**20


@pytest.fixture(scope="module", autouse=True)
def _offline() -> Iterator[None]:
    """Workers inherit the environment: no hub, no telemetry (for this directory's modules only: a session-scoped
    patch would stay in force for every test that runs after them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield


@pytest.fixture(scope="session")
def model_path(tiny_model: Path) -> Path:
    """The embedded tiny Wan, built once per session by the suite's ``tiny_model`` fixture (~6 s)."""
    return tiny_model


def synthetic_planner(
    path: Path | None = None, *, tiling_helps: bool = True, hardware: str = "cpu", model_id: str = "test/model"
) -> MemoryPlanner:
    """A planner whose calibration of ``model_id`` is an exact formula: 100 MiB + 400 MiB per Mpixel + 20 MiB per
    Mpixel·frame (tiling: per-pixel part 100 MiB when it helps, 600 MiB when it does not)."""
    planner = MemoryPlanner(path, hardware=hardware, margin=0.0, defaults=None)
    for tiling in (False, True):
        per_pixel = 400 if not tiling else (100 if tiling_helps else 600)
        for frames in (5, 9, 17, 33):
            for side in (128, 256, 512):
                mp = side * side / 1e6
                need = (100 + per_pixel * mp + 20 * mp * frames) * MiB
                planner.add_measurement(Measurement(model_id, frames, side, side, tiling, False, int(need)))
    return planner


def formula(frames: int, width: int, height: int, *, tiling: bool = False, tiling_helps: bool = True) -> float:
    """The synthetic planner's truth, in bytes."""
    mp = width * height / 1e6
    per_pixel = 400 if not tiling else (100 if tiling_helps else 600)
    return (100 + per_pixel * mp + 20 * mp * frames) * MiB


@pytest.fixture
def make_planner():
    """``synthetic_planner`` as a fixture (test modules do not import conftest)."""
    return synthetic_planner


@pytest.fixture
def truth():
    """``formula`` as a fixture."""
    return formula
