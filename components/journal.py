"""``RequestJournal``: every generation request, written down before its work starts, so none is silently lost.

A request enters as ``accepted`` (with the validated request as JSON), becomes ``running`` when the recovery loop
starts, and ends ``completed`` (with a summary of the result), ``failed`` (with the catalogued reason and the
spec's error report) or ``cancelled`` (the user stopped it: a choice, not a failure, and never re-run). An entry
still ``accepted`` or ``running`` when the app starts again was interrupted (the process was killed): the service
re-runs it or marks it failed, never leaves it. The journal is one SQLite file in
WAL mode with full syncs, so a committed transition survives ``kill -9`` and a power cut. ``prune`` is the
retention: finished entries past an age go, unfinished ones stay until they are re-run.

``JournalKeeper`` is the service's side of it, the crash safety: it claims correlation ids, files how each request
ends (a journal write after acceptance never breaks a generation), applies the retention, and at start re-runs the
requests the app was stopped during — once: a request that keeps killing the app is marked failed, not looped.

A full disk (SQLite's ``SQLITE_FULL``) is a ``StorageFullError``: the write is not stored, every entry stored before
stays and the file stays readable. At admission that refuses the request with the catalogued message before any
work starts; after it the request runs on and its entry keeps its last stored state (``accepted`` or ``running``:
the next start re-runs it, as after a stop).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from components.generation.request import CORRELATION_ID, GenerationOutput, GenerationRequest, validate_request
from components.memory.ladder import MemoryPlan
from components.views.reports import Reporter
from recovery.errors import (
    GenerationFailedError,
    KintsugiError,
    RequestCancelledError,
    RequestExistsError,
    StorageFullError,
    WorkerCrashedError,
)
from recovery.messages import guidance_for
from recovery.metrics import sqlite_disk_full
from recovery.outcome import Outcome
from recovery.taxonomy import EnhancedFailureType

__all__ = [
    "JournalEntry",
    "JournalKeeper",
    "RequestJournal",
    "RequestState",
    "RESTARTED_REASON",
    "STOPPED_AGAIN_REASON",
]

RESTARTED_REASON = "the app stopped while this request was running; it was retried after restart"
STOPPED_AGAIN_REASON = (
    "the app stopped while this request was running, and again during its retry after "
    "restart; it was not retried a second time"
)
MAX_RESTARTS = 1  # re-runs after the app stopped; a request that keeps killing the app must not loop forever
T = TypeVar("T")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    request TEXT,
    status TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    reason TEXT,
    result TEXT,
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_status ON requests (status);
"""


class RequestState(str, Enum):
    """Where a request stands; ``completed``, ``failed`` and ``cancelled`` are final."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_COLUMNS = "id, request, status, accepted_at, updated_at, reason, result, restarts"
_UNFINISHED = (RequestState.ACCEPTED.value, RequestState.RUNNING.value)
_FINISHED = (RequestState.COMPLETED.value, RequestState.FAILED.value, RequestState.CANCELLED.value)


@dataclass(frozen=True)
class JournalEntry:
    """One request as the journal knows it. ``result`` is the result summary when completed and the spec's error
    report when failed or cancelled; ``restarts`` counts the re-runs after the app stopped during the request."""

    id: str
    request: Mapping[str, Any] | None
    status: RequestState
    accepted_at: float
    updated_at: float
    reason: str | None
    result: Mapping[str, Any] | None
    restarts: int

    @property
    def finished(self) -> bool:
        return self.status.value in _FINISHED


class RequestJournal:
    """The journal of requests in ``path`` (created with its folder). Safe to use from several threads."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    # -- transitions: each one statement, so a kill leaves either the old state or the new one ------------------
    def accept(self, request_id: str, request: Mapping[str, Any]) -> bool:
        """Record a validated request before its work starts; ``False`` (nothing written) if the id is already
        journaled."""
        now = self._clock()
        return self._insert(
            "INSERT INTO requests (id, request, status, accepted_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (request_id, json.dumps(dict(request)), RequestState.ACCEPTED.value, now, now),
        )

    def reject(self, request_id: str, reason: str, report: Mapping[str, Any]) -> bool:
        """Record a request refused before it was accepted (invalid parameters): failed from the start. ``False``
        (nothing written) if the id is already journaled."""
        now = self._clock()
        return self._insert(
            "INSERT INTO requests (id, status, accepted_at, updated_at, reason, result) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (request_id, RequestState.FAILED.value, now, now, reason, json.dumps(dict(report))),
        )

    def mark_running(self, request_id: str) -> bool:
        """The recovery loop started; ``False`` if the request is unknown or already finished."""
        return self._move(request_id, RequestState.RUNNING, _UNFINISHED)

    def complete(self, request_id: str, result: Mapping[str, Any]) -> bool:
        """The request delivered a video; ``result`` is its summary (video file name, attempts, ...)."""
        return self._move(request_id, RequestState.COMPLETED, _UNFINISHED, result=result)

    def fail(self, request_id: str, reason: str, report: Mapping[str, Any] | None = None) -> bool:
        """The request ended without a video: ``reason`` is the catalogued message, ``report`` the error shape."""
        return self._move(request_id, RequestState.FAILED, _UNFINISHED, reason=reason, result=report)

    def cancel(self, request_id: str, reason: str, report: Mapping[str, Any] | None = None) -> bool:
        """The user stopped the request (before or while it ran); ``False`` if it is unknown or already
        finished."""
        return self._move(request_id, RequestState.CANCELLED, _UNFINISHED, reason=reason, result=report)

    def restart(self, request_id: str, reason: str) -> bool:
        """An interrupted request is about to run again: back to ``accepted``, one more restart counted."""
        with self._lock, self._writing():
            cursor = self._db.execute(
                "UPDATE requests SET status = ?, reason = ?, restarts = restarts + 1, updated_at = ? "
                f"WHERE id = ? AND status IN ({', '.join('?' * len(_UNFINISHED))})",
                (RequestState.ACCEPTED.value, reason, self._clock(), request_id, *_UNFINISHED),
            )
            return cursor.rowcount == 1

    # -- queries ----------------------------------------------------------------------------------------------
    def get(self, request_id: str) -> JournalEntry | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM requests WHERE id = ?", (request_id,)).fetchone()
        return _entry(row) if row else None

    def unfinished(self) -> list[JournalEntry]:
        """Entries still accepted or running, oldest first: after a start-up, the ones the app was killed during."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE status IN ({', '.join('?' * len(_UNFINISHED))}) "
                "ORDER BY accepted_at",
                _UNFINISHED,
            ).fetchall()
        return [_entry(row) for row in rows]

    # -- retention --------------------------------------------------------------------------------------------
    def prune(self, max_age_s: float) -> int:
        """Delete the completed, failed and cancelled entries that finished more than ``max_age_s`` seconds ago;
        unfinished ones are kept whatever their age (the next start re-runs them). Returns how many were deleted."""
        if not max_age_s > 0:  # NaN too
            raise ValueError(f"`max_age_s` must be a positive number of seconds (got {max_age_s})")
        with self._lock, self._writing():
            cursor = self._db.execute(
                f"DELETE FROM requests WHERE status IN ({', '.join('?' * len(_FINISHED))}) AND updated_at < ?",
                (*_FINISHED, self._clock() - max_age_s),
            )
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- internals --------------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write; a full disk is raised as ``StorageFullError`` (the statement is not stored)."""
        try:
            yield
        except sqlite3.Error as exc:
            full = sqlite_disk_full(exc, self.path)
            if full is None:
                raise
            raise full from exc

    def _insert(self, sql: str, values: tuple[Any, ...]) -> bool:
        with self._lock, self._writing():
            return self._db.execute(sql, values).rowcount == 1

    def _move(
        self,
        request_id: str,
        to: RequestState,
        allowed_from: tuple[str, ...],
        *,
        reason: str | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> bool:
        """One guarded transition: a final state is never overwritten, and the reason is kept unless replaced."""
        with self._lock, self._writing():
            cursor = self._db.execute(
                "UPDATE requests SET status = ?, reason = COALESCE(?, reason), result = COALESCE(?, result), "
                f"updated_at = ? WHERE id = ? AND status IN ({', '.join('?' * len(allowed_from))})",
                (
                    to.value,
                    reason,
                    json.dumps(dict(result)) if result is not None else None,
                    self._clock(),
                    request_id,
                    *allowed_from,
                ),
            )
            return cursor.rowcount == 1


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    request_id, request, status, accepted_at, updated_at, reason, result, restarts = row
    return JournalEntry(
        id=request_id,
        request=json.loads(request) if request else None,
        status=RequestState(status),
        accepted_at=accepted_at,
        updated_at=updated_at,
        reason=reason,
        result=json.loads(result) if result else None,
        restarts=restarts,
    )


class JournalKeeper:
    """The journal as the service uses it: claims, endings and the re-runs after a stop.

    Every write after acceptance is guarded (logged, never raised): like metrics, the journal never breaks a
    generation. ``reporter`` builds the failure reports that failed entries keep.
    """

    def __init__(self, journal: RequestJournal, reporter: Reporter, *, retention_days: int = 30) -> None:
        self.journal, self.reporter, self.retention_days = journal, reporter, retention_days

    # -- admission ------------------------------------------------------------------------------------------------
    def claim(self, correlation_id: str | None) -> str:
        """A fresh correlation id, or the caller's: well-formed and not journaled yet (else the refusal is
        raised: ``GenerationFailedError``, or ``RequestExistsError`` for a repeat)."""
        if correlation_id is None:
            return uuid.uuid4().hex[:12]
        if not isinstance(correlation_id, str) or not CORRELATION_ID.fullmatch(correlation_id):
            raise self.reporter.bad_correlation_id(correlation_id)
        if self.journal.get(correlation_id) is not None:
            raise self.exists(correlation_id)
        return correlation_id

    def exists(self, correlation_id: str) -> RequestExistsError:
        """The refusal of a repeated id, naming the existing request's status."""
        entry = self.journal.get(correlation_id)
        return self.reporter.exists(correlation_id, entry.status.value if entry is not None else "unknown")

    def accept(self, correlation_id: str, checked: GenerationRequest) -> None:
        """Journal a validated request before its work starts; a request the journal cannot hold fails here,
        before it starts, and an id journaled meanwhile (two requests with one key) is refused: that one runs."""
        try:
            accepted = self.journal.accept(correlation_id, checked.to_dict())
        except (sqlite3.Error, StorageFullError) as exc:
            raise self.reporter.failure(exc, correlation_id, checked) from exc
        if not accepted:
            raise self.exists(correlation_id)

    def reject(self, correlation_id: str, failure: GenerationFailedError) -> None:
        """Journal a request refused at validation as failed; ``RequestExistsError`` if the id was journaled
        meanwhile (that request stands)."""
        error = failure.report["error"]
        if self._guarded(self.journal.reject, correlation_id, error["user_message"], failure.report) is False:
            raise self.exists(correlation_id)

    # -- endings --------------------------------------------------------------------------------------------------
    def running(self, correlation_id: str) -> None:
        self._guarded(self.journal.mark_running, correlation_id)

    def finished(
        self, outcome: Outcome[GenerationOutput], checked: GenerationRequest, plan: MemoryPlan
    ) -> GenerationFailedError | None:
        """Completed with a result summary, or failed with the catalogued message and the spec's error report
        (returned, so the caller raises the same failure it filed)."""
        if not outcome.ok:
            return self.failed(outcome.error, outcome.correlation_id, checked, outcome)
        output = outcome.value
        assert output is not None
        made = self.reporter.result(outcome, plan, [])  # what the user is told changed, filed the same way
        self._guarded(
            self.journal.complete,
            outcome.correlation_id,
            {
                "video": output.video_path.rsplit("/", 1)[-1],
                "attempts": len(outcome.attempts),
                "degraded": bool(outcome.degraded or plan.degraded),
                "changed": made.changed,
                "fallback_from": made.fallback_from,
                "fallback_to": made.fallback_to,
                "changes": [*plan.changes, *outcome.changes],
                "request": output.request.to_dict(),
                "frames_sha256": output.frames_sha256,
            },
        )
        return None

    def failed(
        self,
        error: BaseException | None,
        correlation_id: str,
        checked: GenerationRequest,
        outcome: Outcome[Any] | None = None,
    ) -> GenerationFailedError | None:
        """Mark the request failed with its catalogued message and report; the failure, or ``None`` if even the
        report could not be made (the journal then keeps the request unfinished, for the next start)."""
        try:
            failure = self.reporter.failure(error, correlation_id, checked, outcome)
        except Exception:
            log.exception("could not build the failure report of request %s", correlation_id)
            return None
        self._guarded(self.journal.fail, correlation_id, failure.report["error"]["user_message"], failure.report)
        return failure

    def cancelled(self, correlation_id: str, cancellation: RequestCancelledError) -> bool:
        """Mark the request cancelled, with the plain message and the report the caller gets; ``False`` when it
        had already ended (or the write failed, logged)."""
        return bool(
            self._guarded(
                self.journal.cancel, correlation_id, cancellation.report["error"]["user_message"], cancellation.report
            )
        )

    # -- at start -------------------------------------------------------------------------------------------------
    def apply_retention(self) -> None:
        """Delete the finished entries older than ``retention_days`` (0 keeps them all); their ids become free
        again. Retention never stops the service from starting."""
        if self.retention_days <= 0:
            return
        try:
            deleted = self.journal.prune(self.retention_days * 86400)
        except sqlite3.Error:
            log.exception("could not apply the journal's retention")
            return
        if deleted:
            log.info("deleted %d journal entries finished more than %d days ago", deleted, self.retention_days)

    def reconcile(self, run: Callable[[str, GenerationRequest], None]) -> list[str]:
        """Deal with every request left accepted or running by a previous run of the app (it was killed): re-run
        each in the background with ``run(correlation_id, request)``, one after another, or mark it failed with
        the reason when it cannot run. Returns the re-run ids."""
        rerun: list[tuple[str, GenerationRequest]] = []
        for entry in self.journal.unfinished():
            try:
                if entry.restarts >= MAX_RESTARTS or entry.request is None:
                    raise WorkerCrashedError(STOPPED_AGAIN_REASON, phase="restart")
                checked, _ = validate_request(GenerationRequest.from_dict(dict(entry.request)), auto_correct=False)
            except (KintsugiError, TypeError, ValueError) as exc:
                failure = self.reporter.failure(exc, entry.id, entry.request)
                reason = (
                    STOPPED_AGAIN_REASON
                    if isinstance(exc, WorkerCrashedError)
                    else (failure.report["error"]["user_message"])
                )
                self.journal.fail(entry.id, reason, failure.report)
                continue
            if self.journal.restart(entry.id, RESTARTED_REASON):
                rerun.append((entry.id, checked))
        if rerun:
            threading.Thread(target=self._rerun, args=(rerun, run), name="journal-rerun", daemon=True).start()
        return [correlation_id for correlation_id, _ in rerun]

    @staticmethod
    def _rerun(requests: list[tuple[str, GenerationRequest]], run: Callable[[str, GenerationRequest], None]) -> None:
        """Run interrupted requests one after another; each ends in the journal, completed or failed."""
        for correlation_id, checked in requests:
            try:
                run(correlation_id, checked)
            except GenerationFailedError:
                pass  # journaled as failed, with its reason
            except Exception:
                log.exception("re-running request %s after a restart failed", correlation_id)

    def close(self) -> None:
        self.journal.close()

    # -- internals ------------------------------------------------------------------------------------------------
    def _guarded(self, write: Callable[..., T], *args: Any) -> T | None:
        """A journal write after acceptance; the write's answer, or ``None`` when it failed (logged)."""
        try:
            return write(*args)
        except StorageFullError as exc:
            message = guidance_for(EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT).user_message
            log.warning("could not write request %s to the journal: %s (%s)", args[0], message, exc)
            return None
        except Exception:
            log.exception("could not write request %s to the journal", args[0])
            return None
