"""Generation requests that wait for a model being downloaded, persisted in SQLite.

A request for a model that is still downloading is queued with an ETA taken from the download's progress events;
when the model is verified, ``release`` runs the waiting requests in order through a callback the service passes
in (the store never imports the worker). The queue survives a restart: the next process sees what still waits.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from components.store_download import DownloadEvent

__all__ = ["GenerationQueue", "QueuedRequest", "RequestState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ticket INTEGER PRIMARY KEY AUTOINCREMENT, model_id TEXT NOT NULL, revision TEXT NOT NULL,
    payload TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL, finished_at REAL, error TEXT);
CREATE TABLE IF NOT EXISTS downloads (
    model_id TEXT PRIMARY KEY, bytes_done INTEGER NOT NULL, bytes_total INTEGER NOT NULL,
    speed_bps REAL NOT NULL, eta_s REAL, updated_at REAL NOT NULL);
"""


class RequestState(str, Enum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class QueuedRequest:
    ticket: int
    model_id: str
    revision: str
    payload: dict[str, Any]
    state: RequestState
    created_at: float
    error: str | None = None


class GenerationQueue:
    """Requests waiting for a model, stored in ``db_path``; safe to use from several threads."""

    def __init__(self, db_path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        with self._db() as db:
            db.executescript(_SCHEMA)

    def enqueue(self, model_id: str, revision: str, payload: dict[str, Any]) -> QueuedRequest:
        """Queue a request (its payload must be JSON) until ``model_id`` is ready."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO requests (model_id, revision, payload, state, created_at) VALUES (?, ?, ?, ?, ?)",
                (model_id, revision, json.dumps(payload), RequestState.WAITING.value, self.clock()))
            ticket = cursor.lastrowid
        return self.get(int(ticket or 0))

    def get(self, ticket: int) -> QueuedRequest:
        with self._db() as db:
            row = db.execute("SELECT * FROM requests WHERE ticket = ?", (ticket,)).fetchone()
        if row is None:
            raise KeyError(f"no queued request with ticket {ticket}")
        return _request(row)

    def waiting(self, model_id: str | None = None) -> list[QueuedRequest]:
        query = "SELECT * FROM requests WHERE state = ?" + (" AND model_id = ?" if model_id else "")
        args = (RequestState.WAITING.value, model_id) if model_id else (RequestState.WAITING.value,)
        with self._db() as db:
            return [_request(row) for row in db.execute(query + " ORDER BY ticket", args)]

    def record_progress(self, event: DownloadEvent) -> None:
        """A download listener: keep the latest progress of each model for ETAs."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO downloads VALUES (?, ?, ?, ?, ?, ?)",
                       (event.repo_id, event.bytes_done, event.bytes_total, event.speed_bps, event.eta_s,
                        self.clock()))

    def eta_s(self, ticket: int) -> float | None:
        """Seconds until the request's model is downloaded, from its latest progress (None: not measured)."""
        request = self.get(ticket)
        with self._db() as db:
            row = db.execute("SELECT eta_s FROM downloads WHERE model_id = ?", (request.model_id,)).fetchone()
        return None if row is None else row["eta_s"]

    def release(self, model_id: str, revision: str, run: Callable[[QueuedRequest], None]) -> list[QueuedRequest]:
        """Run the requests waiting for ``model_id``@``revision`` in order; a failing run is recorded, not
        raised, so one bad request does not block the others. Returns the requests as they ended."""
        finished = []
        for request in self.waiting(model_id):
            if request.revision != revision:
                continue
            self._set(request.ticket, RequestState.RUNNING)
            try:
                run(request)
            except Exception as exc:  # the service's run decides what failed; we only record it
                self._set(request.ticket, RequestState.FAILED, f"{type(exc).__name__}: {exc}")
            else:
                self._set(request.ticket, RequestState.DONE)
            finished.append(self.get(request.ticket))
        return finished

    def _set(self, ticket: int, state: RequestState, error: str | None = None) -> None:
        with self._db() as db:
            db.execute("UPDATE requests SET state = ?, error = ?, finished_at = ? WHERE ticket = ?",
                       (state.value, error, self.clock(), ticket))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.db_path, timeout=30)) as db:
            db.row_factory = sqlite3.Row
            with db:
                yield db


def _request(row: sqlite3.Row) -> QueuedRequest:
    return QueuedRequest(row["ticket"], row["model_id"], row["revision"], json.loads(row["payload"]),
                         RequestState(row["state"]), row["created_at"], row["error"])
