"""GenerationService end to end: validation, the worker, the recovery loop, events, the failure report."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from components.service import GenerationService
from components.settings import Settings
from components.store.download import RetryPolicy
from components.store.model_store import ModelStore
from components.views.reports import EMBEDDED_MODEL_NOTE
from recovery import events
from recovery.errors import GenerationFailedError
from tests.support.app_process import free_port


@pytest.fixture(scope="module")
def service(offline_service: GenerationService) -> GenerationService:
    """The session's offline service (tests/conftest.py): a hub model is unreachable at once, no fallback."""
    return offline_service


REQUEST = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 3}


def test_generate_streams_corrections_progress_and_a_result(service: GenerationService) -> None:
    """Corrections come first, then phases, denoising steps and decoder chunks, and the stream ends with the
    result."""
    stream = list(service.generate({**REQUEST, "num_frames": 6, "width": 70}))
    kinds = [event.kind for event in stream]
    assert kinds[:2] == ["correction", "correction"]
    assert kinds[-1] == "result"
    progress = [(e.data["phase"], e.data["step"], e.message) for e in stream if e.kind == "progress"]
    assert progress == [
        ("denoise", 1, "step 1/2"),
        ("denoise", 2, "step 2/2"),
        ("decode", 1, "decoding 1/2"),
        ("decode", 2, "decoding 2/2"),
    ]
    result = stream[-1].data["result"]
    assert (result.request.num_frames, result.request.width) == (5, 64)
    assert Path(result.video_path).is_file()
    assert result.video_path.startswith(str(service.settings.outputs_dir))


def test_result_says_the_embedded_model_makes_noise(service: GenerationService) -> None:
    """A video from the embedded model carries the note that its weights are random."""
    result = service.generate_video(REQUEST)
    assert result.notes == (EMBEDDED_MODEL_NOTE,)
    assert result.attempts == 1 and not result.degraded and result.changes == ()


def test_recovery_events_of_the_run_are_streamed(service: GenerationService) -> None:
    """The engine's attempt events for this request reach the stream, tagged with its correlation id."""
    stream = list(service.generate(REQUEST))
    names = [e.message for e in stream if e.kind == "recovery"]
    assert names == [events.ATTEMPT_STARTED, events.ATTEMPT_FINISHED]
    assert stream[-1].data["result"].correlation_id == stream[0].data["correlation_id"]


def test_invalid_parameter_fails_with_a_report_naming_it(service: GenerationService) -> None:
    """An out-of-range value ends in GenerationFailedError whose report names the parameter and value."""
    with pytest.raises(GenerationFailedError) as caught:
        list(service.generate({**REQUEST, "width": 5000}))
    error = caught.value.report["error"]
    assert error["type"] == "invalid_parameters"
    assert "`width`" in error["message"] and "5000" in error["message"]
    assert error["user_message"] and error["actionable_steps"]


def test_failure_report_holds_no_paths_or_tracebacks(service: GenerationService, tmp_path: Path) -> None:
    """A model that cannot be loaded produces a report without file paths or traceback text."""
    with pytest.raises(GenerationFailedError) as caught:
        list(service.generate({**REQUEST, "model_id": "nobody/missing-model"}))
    text = str(caught.value.report)
    assert "Traceback" not in text and "/root" not in text and "/tmp" not in text and ".py" not in text


def test_recovery_attempts_are_recorded_in_the_metrics_store(service: GenerationService) -> None:
    """Each strategy tried on a failed request lands in the SQLite metrics store of the data folder."""
    assert service.metrics is not None
    before = service.metrics.count()
    with pytest.raises(GenerationFailedError):
        list(service.generate({**REQUEST, "model_id": "nobody/missing-model"}))
    assert service.metrics.count() > before


def _run_row(service: GenerationService, correlation_id: str) -> tuple:
    return service.metrics._db.execute(
        "SELECT ok, attempts, first_failure_type, final_failure_type, quality_kept FROM runs WHERE correlation_id = ?",
        (correlation_id,),
    ).fetchone()


def test_each_request_is_recorded_as_a_run(service: GenerationService) -> None:
    """A finished request lands once in the runs table, with the attempts it took and the quality it kept."""
    before = service.metrics.count_runs()
    result = service.generate_video(REQUEST)
    assert service.metrics.count_runs() == before + 1
    assert _run_row(service, result.correlation_id) == (1, result.attempts, None, None, 1.0)


def test_a_failed_request_is_recorded_as_a_failed_run(service: GenerationService) -> None:
    """A request recovery cannot save is recorded with the failure that ended it and no quality."""
    with pytest.raises(GenerationFailedError) as caught:
        list(service.generate({**REQUEST, "model_id": "nobody/missing-model"}))
    ok, _attempts, _first, final, quality = _run_row(service, caught.value.correlation_id)
    assert ok == 0 and final is not None and quality is None


def test_a_rejected_request_is_recorded_as_refused(service: GenerationService) -> None:
    """A request refused at validation still counts, as refused: no attempt, its failure type, and not among the
    failed requests of the summary."""
    before = service.metrics.summary()
    with pytest.raises(GenerationFailedError) as caught:
        list(service.generate({**REQUEST, "steps": 0}))
    assert _run_row(service, caught.value.correlation_id) == (0, 0, "invalid_parameters", "invalid_parameters", None)
    after = service.metrics.summary()
    assert (after["refused"] - before["refused"], after["failed"] - before["failed"]) == (1, 0)


def test_unreachable_model_falls_back_to_the_installed_one_labelled_degraded(tiny_model: Path, tmp_path: Path) -> None:
    """With the hub down, the embedded model installed and another model allowed, the request ends on the embedded
    model, marked degraded, and the change says which model replaced which."""
    settings = Settings(data_dir=tmp_path, hub_cache_dir=tmp_path / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    store = ModelStore(
        settings.hub_cache_dir,
        settings.store_state_dir,
        endpoint=f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1),
    )
    with GenerationService(settings, store=store) as fresh:
        result = fresh.generate_video({**REQUEST, "model_id": "nobody/missing-model", "allow_fallback": True})
    assert result.degraded and result.request.model_id == "kintsugi/tiny-wan-random"
    assert any("nobody/missing-model → kintsugi/tiny-wan-random" in line for line in result.changes)


def test_a_request_that_names_no_model_runs_on_kintsugi_model(
    service: GenerationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``KINTSUGI_MODEL`` is the default model: a request without ``model_id`` is journaled and run on it (here a
    hub model behind a closed port, so it ends with guidance, naming nothing but that model)."""
    monkeypatch.setattr(service, "settings", replace(service.settings, model="nobody/default-model"))
    with pytest.raises(GenerationFailedError) as caught:
        service.generate_video(REQUEST)
    entry = service.request_status(caught.value.correlation_id or "")
    assert entry is not None and entry.request is not None
    assert entry.request["model_id"] == "nobody/default-model"


def test_metrics_are_recorded_when_an_engine_is_injected(tmp_path: Path, tiny_model: Path) -> None:
    """A service given its own engine still records one runs row per request (a rejected one here)."""
    from recovery.engine import EnhancedErrorRecovery

    settings = Settings(data_dir=tmp_path / "data", hub_cache_dir=tmp_path / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    service = GenerationService(settings, engine=EnhancedErrorRecovery(probe=None))
    try:
        with pytest.raises(GenerationFailedError):
            service.generate_video({**REQUEST, "width": 5000})
        assert service.metrics.count_runs() == 1
    finally:
        service.close()


def test_one_hardware_key_for_the_planner_and_the_breaker(service: GenerationService) -> None:
    """The breaker keys its failures on the machine the planner learns for, never on the setting ``auto``."""
    with pytest.raises(GenerationFailedError):
        service.generate_video({**REQUEST, "model_id": "nobody/breaker-key"})
    keys = {status.key.hardware for status in service.engine.breaker.snapshot()}
    assert keys == {service.planner.hardware} and service.planner.hardware.startswith("cpu")
