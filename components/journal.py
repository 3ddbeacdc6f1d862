"""``RequestJournal``: every generation request, written down before its work starts, so none is silently lost.

A request enters as ``accepted`` (with the validated request as JSON), becomes ``running`` when the recovery loop
starts, and ends ``completed`` (with a summary of the result) or ``failed`` (with the catalogued reason and the
spec's error report). An entry still ``accepted`` or ``running`` when the app starts again was interrupted (the
process was killed): the service re-runs it or marks it failed, never leaves it. The journal is one SQLite file in
WAL mode with full syncs, so a committed transition survives ``kill -9`` and a power cut. ``prune`` is the
retention: finished entries past an age go, unfinished ones stay until they are re-run.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = ["RequestJournal", "JournalEntry", "RequestState"]

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
    """Where a request stands; ``completed`` and ``failed`` are final."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


_COLUMNS = "id, request, status, accepted_at, updated_at, reason, result, restarts"
_UNFINISHED = (RequestState.ACCEPTED.value, RequestState.RUNNING.value)


@dataclass(frozen=True)
class JournalEntry:
    """One request as the journal knows it. ``result`` is the result summary when completed and the spec's error
    report when failed; ``restarts`` counts the re-runs after the app stopped during the request."""

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
        return self.status in (RequestState.COMPLETED, RequestState.FAILED)


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
        return self._insert("INSERT INTO requests (id, request, status, accepted_at, updated_at) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                            (request_id, json.dumps(dict(request)), RequestState.ACCEPTED.value, now, now))

    def reject(self, request_id: str, reason: str, report: Mapping[str, Any]) -> bool:
        """Record a request refused before it was accepted (invalid parameters): failed from the start. ``False``
        (nothing written) if the id is already journaled."""
        now = self._clock()
        return self._insert("INSERT INTO requests (id, status, accepted_at, updated_at, reason, result) "
                            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                            (request_id, RequestState.FAILED.value, now, now, reason, json.dumps(dict(report))))

    def mark_running(self, request_id: str) -> bool:
        """The recovery loop started; ``False`` if the request is unknown or already finished."""
        return self._move(request_id, RequestState.RUNNING, _UNFINISHED)

    def complete(self, request_id: str, result: Mapping[str, Any]) -> bool:
        """The request delivered a video; ``result`` is its summary (video file name, attempts, ...)."""
        return self._move(request_id, RequestState.COMPLETED, _UNFINISHED, result=result)

    def fail(self, request_id: str, reason: str, report: Mapping[str, Any] | None = None) -> bool:
        """The request ended without a video: ``reason`` is the catalogued message, ``report`` the error shape."""
        return self._move(request_id, RequestState.FAILED, _UNFINISHED, reason=reason, result=report)

    def restart(self, request_id: str, reason: str) -> bool:
        """An interrupted request is about to run again: back to ``accepted``, one more restart counted."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE requests SET status = ?, reason = ?, restarts = restarts + 1, updated_at = ? "
                f"WHERE id = ? AND status IN ({', '.join('?' * len(_UNFINISHED))})",
                (RequestState.ACCEPTED.value, reason, self._clock(), request_id, *_UNFINISHED))
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
                "ORDER BY accepted_at", _UNFINISHED).fetchall()
        return [_entry(row) for row in rows]

    # -- retention --------------------------------------------------------------------------------------------
    def prune(self, max_age_s: float) -> int:
        """Delete the completed and failed entries that finished more than ``max_age_s`` seconds ago; unfinished
        ones are kept whatever their age (the next start re-runs them). Returns how many were deleted."""
        if not max_age_s > 0:  # NaN too
            raise ValueError(f"`max_age_s` must be a positive number of seconds (got {max_age_s})")
        finished = (RequestState.COMPLETED.value, RequestState.FAILED.value)
        with self._lock:
            cursor = self._db.execute(
                f"DELETE FROM requests WHERE status IN ({', '.join('?' * len(finished))}) AND updated_at < ?",
                (*finished, self._clock() - max_age_s))
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- internals --------------------------------------------------------------------------------------------
    def _insert(self, sql: str, values: tuple[Any, ...]) -> bool:
        with self._lock:
            return self._db.execute(sql, values).rowcount == 1

    def _move(self, request_id: str, to: RequestState, allowed_from: tuple[str, ...], *, reason: str | None = None,
              result: Mapping[str, Any] | None = None) -> bool:
        """One guarded transition: a final state is never overwritten, and the reason is kept unless replaced."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE requests SET status = ?, reason = COALESCE(?, reason), result = COALESCE(?, result), "
                f"updated_at = ? WHERE id = ? AND status IN ({', '.join('?' * len(allowed_from))})",
                (to.value, reason, json.dumps(dict(result)) if result is not None else None, self._clock(),
                 request_id, *allowed_from))
            return cursor.rowcount == 1


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    request_id, request, status, accepted_at, updated_at, reason, result, restarts = row
    return JournalEntry(
        id=request_id, request=json.loads(request) if request else None, status=RequestState(status),
        accepted_at=accepted_at, updated_at=updated_at, reason=reason,
        result=json.loads(result) if result else None, restarts=restarts,
    )
