"""Crash-safe requests: the journal's transitions, its survival of kill -9, the app finishing what it was killed
during, client-chosen request ids (``Idempotency-Key``) and the journal's retention."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from components.journal import RESTARTED_REASON, STOPPED_AGAIN_REASON, RequestJournal, RequestState
from components.service import GenerationService
from components.settings import Settings
from components.views.rest_schema import RequestStatus
from recovery.errors import GenerationFailedError, RequestCancelledError, RequestExistsError
from tests.reliability.conftest import started_app
from tests.support.app_process import ROOT

REQUEST = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 1, "seed": 3}
DAY = 86400.0


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[RequestJournal]:
    opened = RequestJournal(tmp_path / "journal.sqlite")
    yield opened
    opened.close()


# -- the journal itself -------------------------------------------------------------------------------------------
def test_accepted_request_is_recorded_with_its_request(journal: RequestJournal) -> None:
    """An accepted request is stored with its validated request and time, before anything runs."""
    journal.accept("abc", REQUEST)
    entry = journal.get("abc")
    assert entry is not None and entry.status is RequestState.ACCEPTED
    assert entry.request == REQUEST and entry.accepted_at > 0 and entry.reason is None and entry.restarts == 0


def test_request_moves_accepted_running_completed(journal: RequestJournal) -> None:
    """The ordinary life: accepted → running → completed, with the result summary kept."""
    journal.accept("abc", REQUEST)
    assert journal.mark_running("abc")
    assert journal.get("abc").status is RequestState.RUNNING
    assert journal.complete("abc", {"video": "abc-1.mp4", "attempts": 1})
    entry = journal.get("abc")
    assert entry.status is RequestState.COMPLETED and entry.result == {"video": "abc-1.mp4", "attempts": 1}


def test_failed_request_keeps_its_reason_and_report(journal: RequestJournal) -> None:
    """A failure stores the catalogued reason and the error report."""
    journal.accept("abc", REQUEST)
    journal.mark_running("abc")
    assert journal.fail("abc", "The model server cannot be reached right now.", {"error": {"type": "x"}})
    entry = journal.get("abc")
    assert entry.status is RequestState.FAILED and entry.reason.startswith("The model server")
    assert entry.result == {"error": {"type": "x"}}


@pytest.mark.parametrize("final", ["complete", "fail", "cancel"])
def test_a_final_state_is_never_overwritten(journal: RequestJournal, final: str) -> None:
    """Once completed, failed or cancelled, later transitions are refused and change nothing."""
    journal.accept("abc", REQUEST)
    getattr(journal, final)("abc", *(["reason"] if final in ("fail", "cancel") else [{"video": "v.mp4"}]))
    before = journal.get("abc")
    assert not journal.mark_running("abc")
    assert not journal.complete("abc", {"video": "other.mp4"})
    assert not journal.fail("abc", "late")
    assert not journal.cancel("abc", "late")
    assert not journal.restart("abc", "again")
    assert journal.get("abc") == before and before.finished


@pytest.mark.parametrize("started", [False, True], ids=["accepted", "running"])
def test_cancelled_request_is_final_and_not_unfinished(journal: RequestJournal, started: bool) -> None:
    """A request stopped by the user, waiting or running, is cancelled with its reason and report, and is not
    among the entries a restart would re-run."""
    journal.accept("abc", REQUEST)
    if started:
        journal.mark_running("abc")
    assert journal.cancel("abc", "You stopped this generation.", {"error": {"type": "cancelled"}})
    entry = journal.get("abc")
    assert entry.status is RequestState.CANCELLED and entry.status.value == "cancelled"
    assert entry.reason == "You stopped this generation." and entry.result == {"error": {"type": "cancelled"}}
    assert journal.unfinished() == []


def test_transition_of_an_unknown_request_is_refused(journal: RequestJournal) -> None:
    """Marking an id the journal never accepted changes nothing and says so."""
    assert not journal.mark_running("nope") and journal.get("nope") is None


def test_unfinished_lists_accepted_and_running_oldest_first(tmp_path: Path) -> None:
    """After a start, exactly the entries left accepted or running are reported, in arrival order."""
    clock = iter(range(100, 200))
    journal = RequestJournal(tmp_path / "journal.sqlite", clock=lambda: float(next(clock)))
    for name in ("a", "b", "c", "d"):
        journal.accept(name, REQUEST)
    journal.mark_running("b")
    journal.complete("c", {"video": "c.mp4"})
    journal.fail("d", "reason")
    assert [entry.id for entry in journal.unfinished()] == ["a", "b"]
    journal.close()


def test_restart_counts_and_returns_to_accepted(journal: RequestJournal) -> None:
    """A re-run after a restart goes back to accepted, with the reason and one more restart counted."""
    journal.accept("abc", REQUEST)
    journal.mark_running("abc")
    assert journal.restart("abc", RESTARTED_REASON)
    entry = journal.get("abc")
    assert entry.status is RequestState.ACCEPTED and entry.restarts == 1 and entry.reason == RESTARTED_REASON


def test_rejected_request_is_failed_from_the_start(journal: RequestJournal) -> None:
    """A request refused at validation is journaled as failed, without a stored request."""
    journal.reject("abc", "Some settings are not valid.", {"error": {"type": "invalid_parameters"}})
    entry = journal.get("abc")
    assert entry.status is RequestState.FAILED and entry.request is None and journal.unfinished() == []


def test_accepting_a_journaled_id_again_changes_nothing(journal: RequestJournal) -> None:
    """A second accept or reject of the same id is refused (``False``) and leaves the first entry as it was."""
    assert journal.accept("abc", REQUEST)
    before = journal.get("abc")
    assert not journal.accept("abc", {**REQUEST, "seed": 4})
    assert not journal.reject("abc", "refused", {"error": {"type": "invalid_parameters"}})
    assert journal.get("abc") == before


def test_journal_uses_wal(journal: RequestJournal) -> None:
    """The file is in WAL mode, so readers never block the writer and a commit is one append."""
    with sqlite3.connect(journal.path) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_committed_transition_survives_kill_9(tmp_path: Path) -> None:
    """A process that journals a request and is then SIGKILLed leaves the entry, running, for the next start."""
    path = tmp_path / "journal.sqlite"
    script = (
        "import os, signal, sys; from components.journal import RequestJournal; "
        f"j = RequestJournal({str(path)!r}); j.accept('abc', {{'prompt': 'x'}}); j.mark_running('abc'); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60)
    assert child.returncode == -signal.SIGKILL
    journal = RequestJournal(path)
    assert [(entry.id, entry.status) for entry in journal.unfinished()] == [("abc", RequestState.RUNNING)]
    journal.close()


# -- retention ----------------------------------------------------------------------------------------------------
class Clock:
    """A settable clock for the journal."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _finished(journal: RequestJournal, request_id: str, final: str) -> None:
    journal.accept(request_id, REQUEST)
    if final == "completed":
        journal.complete(request_id, {"video": f"{request_id}-1.mp4"})
    elif final == "cancelled":
        journal.cancel(request_id, "reason")
    else:
        journal.fail(request_id, "reason")


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
def test_prune_deletes_finished_entries_past_the_age(tmp_path: Path, final: str) -> None:
    """A completed, failed or cancelled entry that finished longer ago than the age is deleted, and counted."""
    clock = Clock(1_000 * DAY)
    journal = RequestJournal(tmp_path / "journal.sqlite", clock=clock)
    _finished(journal, "old", final)
    clock.now += 31 * DAY
    assert journal.prune(30 * DAY) == 1 and journal.get("old") is None
    journal.close()


def test_prune_keeps_finished_entries_within_the_age(tmp_path: Path) -> None:
    """An entry that finished more recently than the age stays, even if it was accepted long before."""
    clock = Clock(1_000 * DAY)
    journal = RequestJournal(tmp_path / "journal.sqlite", clock=clock)
    journal.accept("recent", REQUEST)
    clock.now += 40 * DAY
    journal.complete("recent", {"video": "recent-1.mp4"})
    clock.now += 29 * DAY
    assert journal.prune(30 * DAY) == 0 and journal.get("recent") is not None
    journal.close()


def test_prune_never_deletes_unfinished_entries(tmp_path: Path) -> None:
    """Entries still accepted or running stay whatever their age: the next start re-runs them."""
    clock = Clock(1_000 * DAY)
    journal = RequestJournal(tmp_path / "journal.sqlite", clock=clock)
    journal.accept("waiting", REQUEST)
    journal.accept("running", REQUEST)
    journal.mark_running("running")
    clock.now += 365 * DAY
    assert journal.prune(30 * DAY) == 0
    assert [entry.id for entry in journal.unfinished()] == ["waiting", "running"]
    journal.close()


@pytest.mark.parametrize("age", [0.0, -1.0, float("nan")])
def test_prune_refuses_an_age_that_is_not_positive(journal: RequestJournal, age: float) -> None:
    """An age of zero, below zero or NaN is refused naming it, rather than deleting every finished entry."""
    with pytest.raises(ValueError, match="`max_age_s`"):
        journal.prune(age)


def _journal_with_an_old_and_a_new_entry(data_dir: Path) -> None:
    """Before the service exists: one entry finished 31 days ago, one finished now."""
    clock = Clock(time.time() - 31 * DAY)
    journal = RequestJournal(data_dir / "journal.sqlite", clock=clock)
    _finished(journal, "old", "completed")
    clock.now = time.time()
    _finished(journal, "new", "completed")
    journal.close()


@pytest.mark.parametrize(("days", "old_kept"), [(30, False), (0, True)], ids=["30 days", "0 keeps all"])
def test_service_start_applies_the_journal_retention(tmp_path: Path, days: int, old_kept: bool) -> None:
    """A service created on a data folder applies KINTSUGI_JOURNAL_RETENTION_DAYS to the journal it opens: an entry
    finished 31 days ago goes with 30 days and stays with 0 (keep forever); a recent one always stays."""
    settings = Settings(
        data_dir=tmp_path / "data", hub_cache_dir=tmp_path / "hub", device="cpu", journal_retention_days=days
    )
    _journal_with_an_old_and_a_new_entry(settings.data_dir)
    service = GenerationService(settings)
    try:
        assert (service.request_status("old") is not None) is old_kept
        assert service.request_status("new") is not None
    finally:
        service.close()


# -- the service: reconcile and status ---------------------------------------------------------------------------
@pytest.fixture
def idle_service(tmp_path: Path) -> Iterator[GenerationService]:
    """A service that is never started (no worker): enough for the journal's bookkeeping."""
    settings = Settings(data_dir=tmp_path / "data", hub_cache_dir=tmp_path / "hub", device="cpu")
    service = GenerationService(settings)
    yield service
    service.close()


def test_request_killed_during_its_retry_is_failed_not_rerun(idle_service: GenerationService) -> None:
    """An entry already re-run once after a restart is not run again: it fails, with the reason and the report."""
    idle_service.journal.accept("abc", REQUEST)
    idle_service.journal.restart("abc", RESTARTED_REASON)
    assert idle_service.reconcile() == []
    entry = idle_service.request_status("abc")
    assert entry.status is RequestState.FAILED and entry.reason == STOPPED_AGAIN_REASON
    assert entry.result["error"]["type"] == "system_resource_error"


def test_cancelled_request_is_not_rerun_after_a_restart(idle_service: GenerationService) -> None:
    """A request cancelled while it ran stays cancelled when the service starts again: reconcile leaves it."""
    idle_service.journal.accept("abc", REQUEST)
    idle_service.journal.mark_running("abc")
    idle_service.journal.cancel("abc", "You stopped this generation.")
    assert idle_service.reconcile() == []
    assert idle_service.request_status("abc").status is RequestState.CANCELLED


def test_cancelling_a_request_waiting_for_its_rerun_means_it_never_runs(idle_service: GenerationService) -> None:
    """An unfinished entry this service is not running (left by a stopped app, waiting for its re-run) is
    cancelled in the journal, with the cancelled report, so reconcile does not run it; a second cancel is late."""
    idle_service.journal.accept("abc", REQUEST)
    assert idle_service.cancel("abc") is True
    entry = idle_service.request_status("abc")
    assert entry.status is RequestState.CANCELLED and entry.result["error"]["type"] == "cancelled"
    assert entry.reason == "You stopped this generation."
    assert idle_service.reconcile() == []
    assert idle_service.cancel("abc") is False and idle_service.cancel("unknown") is False


def test_interrupted_request_that_is_no_longer_valid_fails_naming_the_parameter(
    idle_service: GenerationService,
) -> None:
    """A journaled request that does not validate any more is failed with its catalogued report, not lost."""
    idle_service.journal.accept("abc", {**REQUEST, "width": 70})  # not divisible by 16: no correction on re-run
    assert idle_service.reconcile() == []
    entry = idle_service.request_status("abc")
    assert entry.status is RequestState.FAILED and entry.reason
    assert entry.result["error"]["type"] == "invalid_parameters" and "`width`" in entry.result["error"]["message"]


def test_invalid_request_is_journaled_as_failed(idle_service: GenerationService) -> None:
    """A request rejected at validation still has a status: failed, with the catalogued message."""
    from recovery.errors import GenerationFailedError

    with pytest.raises(GenerationFailedError) as caught:
        idle_service.generate_video({**REQUEST, "steps": 0})
    entry = idle_service.request_status(caught.value.correlation_id)
    assert entry.status is RequestState.FAILED and entry.reason == caught.value.report["error"]["user_message"]


@pytest.mark.parametrize("correlation_id", ["a b", "x" * 65, "", "../journal", "abc\n", 12])
def test_service_refuses_a_malformed_correlation_id(idle_service: GenerationService, correlation_id: Any) -> None:
    """A caller-chosen id outside 1–64 of ``A-Za-z0-9_-`` is refused naming `correlation_id`; nothing is
    journaled."""
    with pytest.raises(GenerationFailedError) as caught:
        idle_service.generate_video(REQUEST, correlation_id=correlation_id)
    assert "`correlation_id`" in caught.value.report["error"]["message"]
    assert caught.value.report["error"]["type"] == "invalid_parameters" and caught.value.correlation_id is None
    with sqlite3.connect(idle_service.journal.path) as reader:
        assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 0


def test_service_refuses_a_journaled_correlation_id_before_running(idle_service: GenerationService) -> None:
    """A caller-chosen id the journal holds is refused with ``RequestExistsError`` naming where its status is;
    the entry is unchanged."""
    idle_service.journal.accept("mine", REQUEST)
    before = idle_service.request_status("mine")
    with pytest.raises(RequestExistsError) as caught:
        idle_service.generate_video({**REQUEST, "seed": 9}, correlation_id="mine")
    assert caught.value.status == "accepted" and caught.value.correlation_id == "mine"
    assert "GET /api/v1/requests/mine" in caught.value.report["error"]["user_message"]
    assert idle_service.request_status("mine") == before


# -- REST: the status endpoint and the correlation id -------------------------------------------------------------
def test_rest_status_of_an_unknown_request_is_404(api_client: Any) -> None:
    """An id the journal does not know answers 404 in the error shape; so does an id that is not an id, and a
    path that tries to leave the route is not found at all."""
    for name in ("0123456789ab", "x" * 65, "a.b", "%2E%2E"):
        answer = api_client.get(f"/api/v1/requests/{name}")
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"
    assert api_client.get("/api/v1/requests/..%2Fjournal.sqlite").status_code == 404


def test_rest_failure_carries_the_correlation_id_and_its_status(api_client: Any) -> None:
    """A failed POST names its correlation id beside the error; GET /requests/{id} shows it failed with the
    same error."""
    answer = api_client.post("/api/v1/generate", json={**REQUEST, "steps": 0})
    body = answer.json()
    assert answer.status_code == 422 and body["correlation_id"]
    status = api_client.get(f"/api/v1/requests/{body['correlation_id']}").json()
    assert status["status"] == "failed" and status["error"] == body["error"]
    assert status["reason"] == body["error"]["user_message"]


def test_rest_completed_request_reports_its_video(api_client: Any) -> None:
    """A delivered request reads completed, with the URL of a video that is served."""
    answer = api_client.post("/api/v1/generate", json=REQUEST)
    assert answer.status_code == 200
    status = api_client.get(f"/api/v1/requests/{answer.json()['correlation_id']}").json()
    assert status["status"] == "completed" and status["video_url"] == answer.json()["video_url"]
    assert status["attempts"] == 1 and status["reason"] is None
    assert api_client.get(status["video_url"]).content[4:8] == b"ftyp"


# -- real processes killed ------------------------------------------------------------------------------------------
def _running_id(journal_path: Path, deadline_s: float) -> str:
    """Wait until the app's journal shows a request running; its id."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if journal_path.exists():
            with sqlite3.connect(journal_path, timeout=5) as reader:
                row = reader.execute("SELECT id FROM requests WHERE status = 'running'").fetchone()
            if row:
                return row[0]
        time.sleep(0.05)
    raise AssertionError("no request was running")


def _finished_status(url: str, correlation_id: str, deadline_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}api/v1/requests/{correlation_id}", timeout=10).json()
        if status["status"] in ("completed", "failed"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"request {correlation_id} did not finish: {status}")


@pytest.mark.slow
def test_request_running_when_the_app_is_killed_completes_after_restart(tmp_path: Path, tiny_model: Path) -> None:
    """kill -9 of the app mid-request, then a start on the same data folder: the request is re-run and ends
    completed, with the restart as its reason and a video that is served."""
    data_dir = tmp_path / "data"
    slow = {"prompt": "a paper boat", "width": 256, "height": 256, "num_frames": 33, "steps": 4, "seed": 5}
    with started_app(data_dir, tiny_model) as app:
        client = threading.Thread(target=lambda: _post_ignoring_disconnect(app.url, slow), daemon=True)
        client.start()
        correlation_id = _running_id(data_dir / "journal.sqlite", 120)
        app.kill_hard()
        client.join(timeout=30)
    with started_app(data_dir, tiny_model) as app:
        status = _finished_status(app.url, correlation_id, 300)
        assert status["status"] == "completed", status
        assert status["reason"] == RESTARTED_REASON and status["restarts"] == 1
        video = httpx.get(app.url + status["video_url"].lstrip("/"), timeout=30)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"


def _post_ignoring_disconnect(url: str, request: dict[str, Any]) -> None:
    try:
        httpx.post(url + "api/v1/generate", json=request, timeout=300)
    except httpx.HTTPError:
        pass  # the app was killed under this request: that is the point


@pytest.mark.slow
def test_worker_killed_mid_generation_is_retried_on_a_fresh_worker(offline_service: GenerationService) -> None:
    """SIGKILL of the worker during denoising: the engine restarts it and the same request completes (on the
    session's shared service, tests/conftest.py: the fresh worker serves the tests after this one)."""
    service = offline_service
    first_pid, events = None, []
    stream = service.generate({**REQUEST, "width": 256, "height": 256, "num_frames": 17, "steps": 8})
    for event in stream:
        events.append(event)
        if event.kind == "progress" and first_pid is None:
            first_pid = service.worker.pid
            service.worker.kill(signal.SIGKILL)
    result = events[-1].data["result"]
    status = service.request_status(result.correlation_id)
    assert first_pid is not None and service.worker.pid != first_pid
    assert result.attempts == 2 and status.status is RequestState.COMPLETED
    assert any(e.kind == "recovery" and e.data.get("failure_type") == "system_resource_error" for e in events)
    assert status.result["attempts"] == 2


# -- REST: Idempotency-Key ----------------------------------------------------------------------------------------
def _key() -> str:
    """A key no other test of the session's shared API data folder uses."""
    return uuid.uuid4().hex


def _runs_row(correlation_id: str) -> tuple[Any, ...] | None:
    import app

    with sqlite3.connect(app.get_service().settings.metrics_db) as reader:
        return reader.execute("SELECT * FROM runs WHERE correlation_id = ?", (correlation_id,)).fetchone()


def test_rest_request_with_idempotency_key_is_found_by_that_key(api_client: Any) -> None:
    """A request sent with a key (here the longest, 64 characters) runs under that key: GET /requests/{key} shows
    it completed, and its video is served."""
    key = ("k" + _key() * 2)[:64]
    answer = api_client.post("/api/v1/generate", json=REQUEST, headers={"Idempotency-Key": key})
    assert answer.status_code == 200 and answer.json()["correlation_id"] == key
    status = api_client.get(f"/api/v1/requests/{key}").json()
    assert status["status"] == "completed" and status["video_url"] == answer.json()["video_url"]
    assert api_client.get(status["video_url"]).content[4:8] == b"ftyp"


def test_rest_repeat_of_a_completed_key_replays_its_result_without_running(api_client: Any) -> None:
    """The same key sent again answers 200 with the first result, marked replayed, and runs nothing: the journal
    entry, the metrics run row and the video file are untouched."""
    import app

    key = _key()
    first = api_client.post("/api/v1/generate", json=REQUEST, headers={"Idempotency-Key": key}).json()
    video = app.get_service().settings.outputs_dir / first["video_url"].rsplit("/", 1)[-1]
    entry, run, written = app.get_service().request_status(key), _runs_row(key), video.stat().st_mtime_ns
    again = api_client.post("/api/v1/generate", json=REQUEST, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    body = again.json()
    assert body["status"] == "completed" and body["correlation_id"] == key
    assert {
        name: body[name] for name in ("video_url", "attempts", "degraded", "changes", "request", "frames_sha256")
    } == {name: first[name] for name in ("video_url", "attempts", "degraded", "changes", "request", "frames_sha256")}
    assert app.get_service().request_status(key) == entry and _runs_row(key) == run and run is not None
    assert video.stat().st_mtime_ns == written


def test_rest_repeat_of_a_failed_key_replays_its_error(api_client: Any) -> None:
    """A key whose request was refused, sent again with that request, answers the same error, marked replayed;
    nothing new is journaled."""
    import app

    key = _key()
    first = api_client.post("/api/v1/generate", json={**REQUEST, "steps": 0}, headers={"Idempotency-Key": key})
    entry = app.get_service().request_status(key)
    again = api_client.post("/api/v1/generate", json={**REQUEST, "steps": 0}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 422 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and app.get_service().request_status(key) == entry


def test_rest_repeat_of_an_unfinished_key_is_409_naming_where_its_status_is(api_client: Any) -> None:
    """A key whose request is still accepted or running, sent again with that request, answers 409 in the error
    shape, saying where to read its status; the entry keeps its own request and no run starts."""
    import app

    journal, key = app.get_service().journal, _key()
    journal.accept(key, REQUEST)  # a request in progress, as the journal holds it
    try:
        answer = api_client.post("/api/v1/generate", json=REQUEST, headers={"Idempotency-Key": key})
        body = answer.json()
        assert answer.status_code == 409 and set(body) == {"error", "correlation_id"} and body["correlation_id"] == key
        assert "already" in body["error"]["user_message"]
        assert f"GET /api/v1/requests/{key}" in body["error"]["user_message"]
        assert journal.get(key).status is RequestState.ACCEPTED and journal.get(key).request == REQUEST
        assert _runs_row(key) is None
    finally:
        journal.fail(key, "the test is over")


@pytest.mark.parametrize("key", ["a b", "x" * 65, "", "a.b", "../journal", "key/1"])
def test_rest_bad_idempotency_key_is_refused_naming_it(api_client: Any, key: str) -> None:
    """A key outside 1–64 of ``A-Za-z0-9_-`` answers 422 in the error shape naming the header and the value."""
    answer = api_client.post("/api/v1/generate", json=REQUEST, headers={"Idempotency-Key": key})
    body = answer.json()
    assert answer.status_code == 422 and body["correlation_id"] is None
    assert body["error"]["type"] == "invalid_parameters"
    assert "`Idempotency-Key`" in body["error"]["message"] and repr(key) in body["error"]["message"]


# -- REST: cancelling a request -----------------------------------------------------------------------------------
LONG_REQUEST = {**REQUEST, "width": 128, "height": 128, "num_frames": 17, "steps": 50}


def test_rest_delete_of_an_unknown_request_is_404(api_client: Any) -> None:
    """Cancelling an id the journal does not know (or that is not an id) answers 404 in the error shape."""
    for name in ("0123456789ab", "a.b"):
        answer = api_client.delete(f"/api/v1/requests/{name}")
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("final", ["complete", "fail", "cancel"])
def test_rest_delete_of_a_finished_request_is_409(api_client: Any, final: str) -> None:
    """Cancelling a request that already ended answers 409 naming its status, and changes nothing."""
    import app

    journal, key = app.get_service().journal, _key()
    journal.accept(key, REQUEST)
    getattr(journal, final)(key, *(["reason"] if final in ("fail", "cancel") else [{"video": f"{key}-1.mp4"}]))
    before = journal.get(key)
    answer = api_client.delete(f"/api/v1/requests/{key}")
    body = answer.json()
    assert answer.status_code == 409 and body["status"] == before.status.value and body["correlation_id"] == key
    assert body["error"]["type"] == "already_finished" and journal.get(key) == before


def test_rest_delete_of_a_waiting_request_cancels_it_before_it_starts(api_client: Any) -> None:
    """A request journaled but not started (waiting for its turn) is cancelled at once: 200 cancelled, and its
    status says so with the cancelled error; no run is recorded."""
    import app

    journal, key = app.get_service().journal, _key()
    journal.accept(key, REQUEST)
    answer = api_client.delete(f"/api/v1/requests/{key}")
    assert answer.status_code == 200 and answer.json() == {"correlation_id": key, "status": "cancelled"}
    status = api_client.get(f"/api/v1/requests/{key}").json()
    assert status["status"] == "cancelled" and status["error"]["type"] == "cancelled"
    assert RequestStatus.model_validate(status).status == "cancelled"  # the documented schema names the state
    assert _runs_row(key) is None


def test_rest_delete_stops_a_running_request(api_client: Any) -> None:
    """DELETE while a request denoises stops it: 200 cancelled, the caller's stream ends with
    RequestCancelledError, GET shows it cancelled with the plain message, and no run row is recorded."""
    import app

    service, key = app.get_service(), _key()
    stepping, ended = threading.Event(), []

    def run() -> None:
        try:
            for event in service.generate(LONG_REQUEST, correlation_id=key):
                if event.kind == "progress":
                    stepping.set()
        except Exception as exc:
            ended.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    assert stepping.wait(120)
    answer = api_client.delete(f"/api/v1/requests/{key}")
    runner.join(60)
    assert answer.status_code == 200 and answer.json() == {"correlation_id": key, "status": "cancelled"}
    assert len(ended) == 1 and isinstance(ended[0], RequestCancelledError)
    status = api_client.get(f"/api/v1/requests/{key}").json()
    assert status["status"] == "cancelled" and status["reason"] == "You stopped this generation."
    assert status["error"]["type"] == "cancelled" and status["error"]["actionable_steps"] == []
    assert _runs_row(key) is None
