"""Progress with an ETA through the whole service: the time model learns from a run and predicts the next one."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.service import GenerationService
from components.settings import Settings
from components.views.reports import ServiceEvent

# Small in pixels, so that 40 steps of the tiny model take a second or two on a CPU.
JOB = {"prompt": "a lantern", "width": 128, "height": 128, "num_frames": 17, "seed": 2}


@dataclass(frozen=True)
class TimedRun:
    events: list[tuple[float, ServiceEvent]]  # (arrival time, event)
    finished_at: float


def _timed(stream: Iterator[ServiceEvent]) -> TimedRun:
    events = [(time.monotonic(), event) for event in stream]
    return TimedRun(events, time.monotonic())


@pytest.fixture(scope="module")
def forty_steps(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> TimedRun:
    """One warm-up run of 8 steps (it teaches the time model), then the 40-step job, each event timed.

    The worker runs one compute thread: on a CPU shared with other processes, OpenMP's spinning threads make step
    times swing several-fold from one second to the next, and this check is about the model, not the neighbours."""
    data_dir = tmp_path_factory.mktemp("progress")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # read by the worker process, which inherits the environment
        with GenerationService(settings) as service:
            _timed(service.generate({**JOB, "steps": 8}))
            return _timed(service.generate({**JOB, "steps": 40}))


def test_eta_at_the_start_of_a_40_step_job_is_within_half_of_the_real_time(forty_steps: TimedRun) -> None:
    """An accuracy check on measured data: the ETA of the first phase event, learned from one 8-step run, is
    within 50 % of the time the job then really took to its result."""
    started_at, first = next((at, e) for at, e in forty_steps.events if e.kind == "phase")
    real = forty_steps.finished_at - started_at
    assert first.data["eta_s"] is not None
    assert abs(first.data["eta_s"] - real) <= 0.5 * real, f"ETA {first.data['eta_s']:.2f} s, real {real:.2f} s"


def test_every_phase_and_step_carries_the_eta_and_it_counts_down(forty_steps: TimedRun) -> None:
    """Each phase and progress event has ``eta_s`` and ``phase_eta_s``; during denoising the phase's ETA falls to 0
    at the last step, where decode and export are still left in the attempt's ETA."""
    timed = [e for _at, e in forty_steps.events if e.kind in ("phase", "progress")]
    assert [e.data["phase"] for e in timed if e.kind == "phase"] == ["load", "denoise", "decode", "export"]
    assert all(e.data["eta_s"] is not None and e.data["phase_eta_s"] is not None for e in timed)
    steps = [e for e in timed if e.kind == "progress" and e.data.get("phase", "denoise") == "denoise"]
    assert len(steps) == 40
    remaining = [e.data["phase_eta_s"] for e in steps]
    assert remaining[10] > remaining[30] > remaining[-1] == 0
    assert steps[-1].data["eta_s"] > 0  # decode and export are still to come
