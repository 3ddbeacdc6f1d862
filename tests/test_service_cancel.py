"""Stopping a request through the service: waiting, denoising or decoding; the worker stays warm, the journal says
cancelled, the metrics count no failure, and other requests are untouched."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from components.journal import RequestState
from components.service import GenerationService
from recovery import events
from recovery.errors import CANCELLED_USER_MESSAGE, RequestCancelledError

SMALL = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 3}
LONG = {**SMALL, "width": 128, "height": 128, "num_frames": 33, "steps": 60}


@pytest.fixture(scope="module")
def service(offline_service: GenerationService) -> GenerationService:
    """The session's started service (tests/conftest.py), its worker shared with tests/test_service.py."""
    return offline_service


class Run:
    """One request streamed on a thread: its events as they come, and how its stream ended."""

    def __init__(self, service: GenerationService, request: dict[str, Any], correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self._service, self._request = service, request
        self._thread = threading.Thread(target=self._read)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._service.generate(self._request, correlation_id=self.correlation_id):
                self.events.append(event)
        except BaseException as exc:
            self.error = exc
        self.ended_at = time.monotonic()

    def wait_for(self, phase: str, deadline_s: float = 120) -> None:
        """Until a progress event of ``phase`` (denoise/decode) has come."""
        deadline = time.monotonic() + deadline_s
        while not any(e.kind == "progress" and e.data.get("phase") == phase for e in self.events):
            assert time.monotonic() < deadline and self._thread.is_alive(), f"no {phase} progress"
            time.sleep(0.01)

    def join(self) -> None:
        self._thread.join(120)
        assert not self._thread.is_alive()


def _cid(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def _run_row(service: GenerationService, correlation_id: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = service.metrics._db.execute(
        "SELECT ok FROM runs WHERE correlation_id = ?", (correlation_id,)
    ).fetchone()
    return row


@pytest.mark.parametrize("phase", ["denoise", "decode"])
def test_cancel_while_running_ends_the_stream_cancelled(service: GenerationService, phase: str) -> None:
    """A cancel during denoise or decode ends the stream with RequestCancelledError (type ``cancelled``, the plain
    message, no steps to take) naming where it stopped."""
    run = Run(service, LONG if phase == "denoise" else {**LONG, "steps": 3}, _cid(phase))
    run.wait_for(phase)
    assert service.cancel(run.correlation_id) is True
    run.join()
    assert isinstance(run.error, RequestCancelledError) and run.error.phase == phase
    assert run.error.correlation_id == run.correlation_id
    error = run.error.report["error"]
    assert (error["type"], error["user_message"]) == ("cancelled", CANCELLED_USER_MESSAGE)
    assert error["actionable_steps"] == [] and error["recovery_attempted"] is False
    if phase == "denoise":
        assert run.error.steps_completed is not None and run.error.steps_completed < LONG["steps"]


def test_worker_stays_warm_and_the_next_request_runs(service: GenerationService) -> None:
    """After a cancel the same worker process serves the next request, which completes."""
    pid = service.worker.pid
    run = Run(service, LONG, _cid("warm"))
    run.wait_for("denoise")
    service.cancel(run.correlation_id)
    run.join()
    result = service.generate_video(SMALL)
    assert result.output.frames == SMALL["num_frames"] and service.worker.pid == pid


def test_cancelled_request_is_journaled_cancelled_and_not_a_failed_run(service: GenerationService) -> None:
    """The journal files a cancelled request as ``cancelled`` with its report; the metrics record no run row and
    no strategy attempt for it (a choice is not a failure)."""
    attempts_before = service.metrics.count()
    run = Run(service, LONG, _cid("journal"))
    run.wait_for("denoise")
    service.cancel(run.correlation_id)
    run.join()
    entry = service.request_status(run.correlation_id)
    assert entry is not None and entry.status is RequestState.CANCELLED and entry.finished
    assert entry.reason == CANCELLED_USER_MESSAGE and entry.result["error"]["type"] == "cancelled"
    assert _run_row(service, run.correlation_id) is None
    assert service.metrics.count() == attempts_before


def test_recovery_is_not_attempted_for_a_cancel(service: GenerationService) -> None:
    """The engine tells the attempt ended cancelled, and classifies nothing and tries no strategy."""
    run = Run(service, LONG, _cid("engine"))
    run.wait_for("denoise")
    service.cancel(run.correlation_id)
    run.join()
    recovery = [e for e in run.events if e.kind == "recovery"]
    assert [e.message for e in recovery] == [events.ATTEMPT_STARTED, events.ATTEMPT_FINISHED]
    assert recovery[-1].data["cancelled"] is True and recovery[-1].data["success"] is False


def test_queued_request_cancelled_never_starts_and_the_running_one_goes_on(service: GenerationService) -> None:
    """A request waiting for the busy worker, cancelled, ends ``queued`` without a single phase of its own; the
    request ahead of it is untouched and completes."""
    ahead_request = {**LONG, "num_frames": 9, "steps": 30}
    ahead = Run(service, ahead_request, _cid("ahead"))
    ahead.wait_for("denoise")
    queued = Run(service, SMALL, _cid("queued"))
    deadline = time.monotonic() + 30
    while service.request_status(queued.correlation_id) is None or (
        service.request_status(queued.correlation_id).status is not RequestState.RUNNING
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert service.cancel(queued.correlation_id) is True
    queued.join()
    assert isinstance(queued.error, RequestCancelledError) and queued.error.phase == "queued"
    assert not any(e.kind in ("phase", "progress") for e in queued.events)
    assert service.request_status(queued.correlation_id).status is RequestState.CANCELLED
    ahead.join()
    assert ahead.error is None and ahead.events[-1].kind == "result"
    assert ahead.events[-1].data["result"].output.steps_completed == ahead_request["steps"]
    assert ahead.ended_at > queued.ended_at


def test_a_late_cancel_is_ignored(service: GenerationService) -> None:
    """Cancelling a request that already completed, or one never seen, answers False and changes nothing."""
    result = service.generate_video(SMALL)
    before = service.request_status(result.correlation_id)
    assert service.cancel(result.correlation_id) is False
    assert service.cancel("never-seen") is False
    assert service.request_status(result.correlation_id) == before
    assert before is not None and before.status is RequestState.COMPLETED


def test_cancel_without_an_id_stops_the_running_request(service: GenerationService) -> None:
    """``cancel()`` with no id stops the request whose job runs in the worker; with nothing running it answers
    False."""
    run = Run(service, LONG, _cid("any"))
    run.wait_for("denoise")
    assert service.cancel() is True
    run.join()
    assert isinstance(run.error, RequestCancelledError)
    assert service.cancel() is False


def test_closing_the_stream_does_not_cancel(service: GenerationService) -> None:
    """A caller that stops reading does not stop the request (REST and re-runs rely on it running to its end):
    it completes in the journal; ``cancel`` is what stops it."""
    correlation_id = _cid("closed")
    stream = service.generate(SMALL, correlation_id=correlation_id)
    next(stream)
    stream.close()
    assert service.wait_until_ended(correlation_id, 120)
    entry = service.request_status(correlation_id)
    assert entry is not None and entry.status is RequestState.COMPLETED
