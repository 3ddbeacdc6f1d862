"""A SQLite store of recovery attempts (one file, WAL), with bounded retention and DataFrame queries.

The store is an event listener: subscribe it to the engine's bus and every finished strategy becomes a row.
pandas is imported only by the queries.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery import events

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AttemptRow", "MetricsStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recovery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    correlation_id TEXT,
    attempt INTEGER NOT NULL,
    failure_type TEXT NOT NULL,
    severity TEXT NOT NULL,
    strategy TEXT NOT NULL,
    success INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_attempts_finished ON recovery_attempts (finished_at);
CREATE INDEX IF NOT EXISTS ix_attempts_strategy ON recovery_attempts (strategy, success, duration_s);
CREATE INDEX IF NOT EXISTS ix_attempts_type ON recovery_attempts (failure_type, strategy, success, duration_s);
"""
_COLUMNS = "correlation_id, attempt, failure_type, severity, strategy, success, duration_s, started_at, finished_at"


@dataclass(frozen=True)
class AttemptRow:
    """One recovery attempt: a strategy applied to one failure of one request."""

    correlation_id: str | None
    attempt: int
    failure_type: str
    severity: str
    strategy: str
    success: bool
    duration_s: float
    started_at: float
    finished_at: float


class MetricsStore:
    """Rows in ``path``; at most ``max_rows`` rows and none older than ``max_age_seconds``, pruned on write."""

    def __init__(self, path: str | Path, *, max_rows: int = 100_000, max_age_seconds: float = 30 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        if max_rows < 1 or max_age_seconds <= 0:
            raise ValueError(f"bad retention ({max_rows=}, {max_age_seconds=})")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def __call__(self, event: events.RecoveryEvent) -> None:
        """Listener: record every ``recovery.strategy_finished`` event of an applicable strategy."""
        if event.name != events.STRATEGY_FINISHED or not event.data.get("applicable", True):
            return
        data = event.data
        self.record(AttemptRow(event.correlation_id, data["attempt"], data["failure_type"], data["severity"],
                               data["strategy"], bool(data["success"]), float(data["duration_s"]),
                               event.timestamp - float(data["duration_s"]), event.timestamp))

    def record(self, row: AttemptRow) -> None:
        """Insert one row, then apply retention."""
        self.record_many([row])

    def record_many(self, rows: Iterable[AttemptRow]) -> None:
        """Insert rows in one transaction, then apply retention."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT INTO recovery_attempts ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                                 (astuple(row) for row in rows))
            self._prune()
            self._db.execute("COMMIT")

    def _prune(self) -> None:
        self._db.execute("DELETE FROM recovery_attempts WHERE finished_at < ?",
                         (self._clock() - self.max_age_seconds,))
        self._db.execute("DELETE FROM recovery_attempts WHERE id <= (SELECT max(id) FROM recovery_attempts) - ?",
                         (self.max_rows,))

    def count(self) -> int:
        """How many rows are kept."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM recovery_attempts").fetchone()[0])

    def _frame(self, sql: str, params: tuple[Any, ...] = ()) -> pd.DataFrame:
        import pandas as pd

        with self._lock:
            cursor = self._db.execute(sql, params)
            columns = [description[0] for description in cursor.description]
            return pd.DataFrame(cursor.fetchall(), columns=columns)

    def success_rate_by_strategy(self) -> pd.DataFrame:
        """Columns: strategy, attempts, successes, success_rate."""
        return self._frame(
            "SELECT strategy, count(*) AS attempts, sum(success) AS successes, avg(success) AS success_rate "
            "FROM recovery_attempts GROUP BY strategy ORDER BY strategy")

    def failures_over_time(self, bucket_seconds: int = 3600) -> pd.DataFrame:
        """Columns: bucket (UTC time), failure_type, failures (distinct failed tries per bucket)."""
        import pandas as pd

        frame = self._frame(
            "SELECT CAST(finished_at / ?1 AS INTEGER) * ?1 AS bucket, failure_type, "
            "count(DISTINCT coalesce(correlation_id, id) || ':' || attempt) AS failures "
            "FROM recovery_attempts GROUP BY bucket, failure_type ORDER BY bucket, failure_type",
            (bucket_seconds,))
        frame["bucket"] = pd.to_datetime(frame["bucket"], unit="s", utc=True)
        return frame

    def recovery_time_distribution(self) -> pd.DataFrame:
        """Columns: strategy, failure_type, success, duration_s — one row per attempt, for histograms."""
        frame = self._frame("SELECT strategy, failure_type, success, duration_s FROM recovery_attempts")
        frame["success"] = frame["success"].astype(bool)
        return frame

    def strategy_effectiveness(self) -> pd.DataFrame:
        """Columns: failure_type, strategy, attempts, successes, success_rate, mean_duration_s."""
        return self._frame(
            "SELECT failure_type, strategy, count(*) AS attempts, sum(success) AS successes, "
            "avg(success) AS success_rate, avg(duration_s) AS mean_duration_s "
            "FROM recovery_attempts GROUP BY failure_type, strategy ORDER BY failure_type, success_rate DESC")

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()
