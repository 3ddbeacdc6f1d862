"""Damage while the model is warm in the worker: the health watch repairs it in the background during a running
generation, the next request loads the model again and is told, and a request meeting damage first notices it
before running. One shared run per situation (the session's offline service, the built-in tiny model)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.service import REPAIRED_DURING_RUN_NOTE, GenerationService
from components.store.health import HealthFinding, HealthTrigger, HealthWatch
from components.views.models import health_log, models_table
from components.views.presenters import timeline_line
from components.views.reports import GenerationResult, ServiceEvent
from recovery import events
from tests.store.test_store_integrity import flip_byte

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
REQUEST = {"prompt": "a glass heron", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 11}


@dataclass
class BackgroundRun:
    """A generation during which a weight file was damaged and the watch repaired it, then the next request."""

    during: list[ServiceEvent]
    job_was_running: bool  # the job was still running when the repair ended
    found: list[HealthFinding]  # what was recorded meanwhile
    next_run: list[ServiceEvent]


def _weight_blob(service: GenerationService) -> Path:
    commit = service.store.cache.resolve(EMBEDDED_MODEL_ID, "main")
    assert commit is not None
    return (service.store.cache.snapshot_dir(EMBEDDED_MODEL_ID, commit) / WEIGHTS).resolve()


def _result(stream: list[ServiceEvent]) -> GenerationResult:
    result: GenerationResult = stream[-1].data["result"]
    return result


def _timeline(stream: list[ServiceEvent]) -> list[str]:
    return [line for line in map(timeline_line, stream) if line]


@pytest.fixture(scope="module")
def service(offline_service: GenerationService) -> GenerationService:
    return offline_service


@pytest.fixture(scope="module")
def background(service: GenerationService) -> Iterator[BackgroundRun]:
    """At the first denoising step of a 3-step run a byte of the transformer's weights is flipped in place and the
    worker is suspended (SIGSTOP), so that the job is certainly still running while a watch polling every 50 ms
    repairs the file; then the worker continues (SIGCONT), and the next request runs."""
    watch = HealthWatch(service.store.health, interval_s=0.2, poll_s=0.05)
    watch.start()
    before = len(service.store.health.findings(EMBEDDED_MODEL_ID))
    during, job_was_running = [], False
    try:
        for event in service.generate({**REQUEST, "steps": 3}):
            during.append(event)
            if event.kind == "progress" and event.data == {**event.data, "phase": "denoise", "step": 1}:
                blob = _weight_blob(service)
                flip_byte(blob, blob.stat().st_size // 2)
                service.worker.kill(signal.SIGSTOP)
                try:
                    deadline = time.monotonic() + 30
                    while len(service.store.health.findings(EMBEDDED_MODEL_ID)) == before:
                        assert time.monotonic() < deadline, "the watch did not repair the flipped file in 30 s"
                        time.sleep(0.02)
                    job_was_running = service.worker.job_id is not None
                finally:
                    service.worker.kill(signal.SIGCONT)
    finally:
        watch.close()
    found = service.store.health.findings(EMBEDDED_MODEL_ID)[before:]
    yield BackgroundRun(during, job_was_running, found, list(service.generate(REQUEST)))


@pytest.fixture(scope="module")
def warm_flip(service: GenerationService, background: BackgroundRun) -> list[ServiceEvent]:
    """With the model warm in the worker (the background runs loaded it), a byte of its weights is flipped in
    place; the next request runs at once."""
    blob = _weight_blob(service)
    flip_byte(blob, blob.stat().st_size // 3)
    return list(service.generate(REQUEST))


def test_the_watch_repairs_during_a_running_generation_without_stopping_it(background: BackgroundRun) -> None:
    """The repair ends while the job still runs; the job finishes in its first attempt; the file is whole."""
    assert background.job_was_running
    assert _result(background.during).attempts == 1
    (finding,) = background.found
    assert finding.trigger is HealthTrigger.FILE_CHANGE and finding.repair.ok and finding.repair.files == (WEIGHTS,)


def test_a_video_made_while_its_model_was_repaired_is_labelled(background: BackgroundRun) -> None:
    """The job read the weights while they were damaged: its result says it may show the damage."""
    assert REPAIRED_DURING_RUN_NOTE in _result(background.during).notes


def test_the_next_request_is_told_and_loads_the_repaired_model(background: BackgroundRun) -> None:
    """The next request's timeline names the background repair and the reload, and the worker really loads."""
    lines = _timeline(background.next_run)
    assert any("model health" in line and "file change" in line and WEIGHTS in line for line in lines)
    assert any("is loaded again" in line for line in lines)
    result = _result(background.next_run)
    assert result.output.timings["load"] > 0 and REPAIRED_DURING_RUN_NOTE not in result.notes


def test_damage_while_warm_is_noticed_before_the_request_runs(warm_flip: list[ServiceEvent]) -> None:
    """The quick check before the request fails: the first attempt fails before any phase ran."""
    first = next(e for e in warm_flip if e.kind == "recovery" and e.message == events.FAILURE_CLASSIFIED)
    assert first.data["attempt"] == 1 and first.data["failure_type"] == "model_corruption_detected"
    assert not [e for e in warm_flip if e.kind == "phase" and e.data["attempt"] == 1]


def test_damage_while_warm_is_repaired_reloaded_and_told(warm_flip: list[ServiceEvent]) -> None:
    """The store's repair worked, the worker loaded the repaired files, a video came out, and the timeline says
    each step."""
    lines = "\n".join(_timeline(warm_flip))
    assert "Damaged model files" in lines and "Repaired the model files**: worked" in lines
    assert "is loaded again" in lines
    result = _result(warm_flip)
    assert Path(result.video_path).is_file() and result.attempts == 2 and result.output.timings["load"] > 0


def test_after_a_repair_the_model_passes_a_full_check(
    service: GenerationService, warm_flip: list[ServiceEvent]
) -> None:
    """What is on disk afterwards: every file hashes to its name."""
    assert service.store.health.verify(EMBEDDED_MODEL_ID).ok


def test_the_models_tab_shows_what_was_found_and_done(
    service: GenerationService, warm_flip: list[ServiceEvent]
) -> None:
    """The model's row names its last repair; the health log lists the background one and the request's."""
    row = models_table(service.store).set_index("model").loc[EMBEDDED_MODEL_ID]
    assert "check before use" in row["last repair"] and "repaired" in row["last repair"]
    log = health_log(service.store)
    assert list(log["found by"][:2]) == ["check before use", "file change"]
    assert WEIGHTS in log["found"][0] and log["done"][0].startswith("repaired")


def test_the_service_runs_its_health_watch(service: GenerationService) -> None:
    """A started service watches its models at the configured interval."""
    assert service.watch.running and service.watch.interval_s == service.settings.health_interval_s
