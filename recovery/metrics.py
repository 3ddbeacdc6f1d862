"""A SQLite store of recovery attempts and generation runs (one file, WAL), with bounded retention and DataFrame
queries.

The store is an event listener: subscribe it to the engine's bus and every finished strategy becomes a row of
``recovery_attempts``. The caller records one ``RunRow`` per request in ``runs`` at the end of it. Both tables keep
at most ``max_rows`` rows and none older than ``max_age_seconds``. Queries aggregate in SQL, so the dashboard stays
fast at the retention limit; pandas is imported only by the queries.

The figures mean what they say: a strategy's success is its request ending with a video after it acted (attempts
are joined to their run), recovery time runs from a request's first failure to its delivered video, and a request
refused before anything ran is counted apart, never as a failed request. A file written by an earlier release is
migrated when it is opened.

A full disk (SQLite's ``SQLITE_FULL``) is a ``StorageFullError`` (``sqlite_disk_full``, shared with the request
journal): the failed transaction is rolled back, so the file keeps every row stored before and stays readable; the
store remembers the failure in ``write_error`` (cleared by the next write that succeeds) and says so in the log with
the catalogued message, and a listener or ``try_record_run`` never breaks the generation for it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from recovery import events
from recovery.errors import StorageFullError
from recovery.messages import guidance_for
from recovery.taxonomy import EnhancedFailureType

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd

    from recovery.outcome import Outcome

__all__ = ["AttemptRow", "MetricsStore", "RunRow", "RunSummary", "DURATION_EDGES_S", "sqlite_disk_full"]

_TABLES_SQL = """
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
    finished_at REAL NOT NULL,
    request_ok INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    correlation_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    ok INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    recovered INTEGER NOT NULL,
    degraded INTEGER NOT NULL,
    first_failure_type TEXT,
    final_failure_type TEXT,
    quality_kept REAL,
    model_id TEXT,
    first_failed_at REAL,
    refused INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS unrecognised_errors (
    error_class TEXT NOT NULL,
    raised_in TEXT NOT NULL,
    first_line TEXT NOT NULL,
    seen INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_correlation_id TEXT,
    PRIMARY KEY (error_class, raised_in, first_line)
);
"""
# Indexes come after the migration, since some of them cover columns an older file gains only there.
_INDEXES_SQL = """
CREATE INDEX IF NOT EXISTS ix_attempts_finished ON recovery_attempts (finished_at);
CREATE INDEX IF NOT EXISTS ix_attempts_request ON recovery_attempts (correlation_id, started_at);
CREATE INDEX IF NOT EXISTS ix_attempts_strategy_request
    ON recovery_attempts (strategy, correlation_id, success, request_ok, duration_s);
CREATE INDEX IF NOT EXISTS ix_attempts_type_request
    ON recovery_attempts (failure_type, strategy, correlation_id, success, request_ok, duration_s);
CREATE UNIQUE INDEX IF NOT EXISTS ix_runs_correlation ON runs (correlation_id);
CREATE INDEX IF NOT EXISTS ix_runs_finished ON runs (finished_at, ok, recovered, refused);
CREATE INDEX IF NOT EXISTS ix_runs_first_failure
    ON runs (first_failure_type, refused, attempts, ok, degraded, quality_kept);
"""
# Columns the tables gained after their first release, with their definition for ``ALTER TABLE``.
_ADDED_COLUMNS = {
    "runs": {"first_failed_at": "REAL", "refused": "INTEGER NOT NULL DEFAULT 0"},
    "recovery_attempts": {"request_ok": "INTEGER"},
}
# ``recovery_attempts.request_ok`` is the ``ok`` of the attempt's request once its run is recorded (NULL before, and
# for a refused one): the strategy queries then read one table. Kept by these statements, after a write of either.
_SET_REQUEST_OK_OF_NEW_ATTEMPTS = (
    "UPDATE recovery_attempts SET request_ok = (SELECT r.ok FROM runs AS r WHERE r.correlation_id = "
    "recovery_attempts.correlation_id AND r.refused = 0) WHERE id > ?"
)
_SET_REQUEST_OK_OF_NEW_RUNS = (
    "UPDATE recovery_attempts SET request_ok = (SELECT r.ok FROM runs AS r WHERE r.correlation_id = "
    "recovery_attempts.correlation_id AND r.refused = 0) "
    "WHERE correlation_id IN (SELECT correlation_id FROM runs WHERE id > ?)"
)
# Indexes of earlier releases that the current ones replace (same name, other columns) or that are no longer used.
_REPLACED_INDEXES = ("ix_runs_finished", "ix_runs_first_failure")
_DROPPED_INDEXES = ("ix_attempts_strategy", "ix_attempts_type")
_ATTEMPT_COLUMNS = (
    "correlation_id",
    "attempt",
    "failure_type",
    "severity",
    "strategy",
    "success",
    "duration_s",
    "started_at",
    "finished_at",
)
_RUN_COLUMNS = (
    "correlation_id",
    "started_at",
    "finished_at",
    "duration_s",
    "ok",
    "attempts",
    "recovered",
    "degraded",
    "first_failure_type",
    "final_failure_type",
    "quality_kept",
    "model_id",
    "first_failed_at",
    "refused",
)
_TABLES = ("recovery_attempts", "runs")
_OOM = "vram_exhaustion"

DURATION_EDGES_S: tuple[float, ...] = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Upper edges of the recovery-time histogram's bins, in seconds; a last bin holds everything slower. Recovery time
runs from a request's first failure to its delivered video, so the bins span seconds to minutes."""


@dataclass(frozen=True)
class AttemptRow:
    """One recovery attempt: a strategy applied to one failure of one request.

    ``success`` is the strategy's own step (it changed something and the engine tried again), not whether the
    request then ended with a video; the queries join the request's run for that.
    """

    correlation_id: str | None
    attempt: int
    failure_type: str
    severity: str
    strategy: str
    success: bool
    duration_s: float
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class RunRow:
    """One generation request from start to end: did it succeed, after how many tries, what it cost in quality.

    ``first_failure_type`` is the failure of the first failed try, ``final_failure_type`` the one that ended a
    failed run (``None`` when it succeeded). ``quality_kept`` is the share of pixel·frames delivered versus asked
    (1.0: all of it; ``None`` when unknown or no video). ``first_failed_at`` is when the first try failed (epoch
    seconds): recovery time runs from there to ``finished_at``. ``refused`` marks a request whose input was refused
    before anything ran (``attempts`` 0): it is counted apart, never as a failed request.
    """

    correlation_id: str
    started_at: float
    finished_at: float
    ok: bool
    attempts: int
    degraded: bool = False
    first_failure_type: str | None = None
    final_failure_type: str | None = None
    quality_kept: float | None = None
    model_id: str | None = None
    first_failed_at: float | None = None
    refused: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"`attempts` must be >= 0 (got {self.attempts!r})")
        if self.finished_at < self.started_at:
            raise ValueError(
                f"`finished_at` must not precede `started_at` (got {self.finished_at!r} < {self.started_at!r})"
            )
        if self.quality_kept is not None and not 0.0 <= self.quality_kept <= 1.0:
            raise ValueError(f"`quality_kept` must be within 0..1 (got {self.quality_kept!r})")
        if self.first_failed_at is not None and not self.started_at <= self.first_failed_at <= self.finished_at:
            raise ValueError(
                f"`first_failed_at` must lie within `started_at`..`finished_at` (got {self.first_failed_at!r})"
            )
        if self.refused and (self.ok or self.attempts):
            raise ValueError(
                f"`refused` means nothing ran: `ok` False and `attempts` 0 (got {self.ok!r}, {self.attempts!r})"
            )

    @property
    def duration_s(self) -> float:
        """Wall time of the whole request, every try and recovery included."""
        return self.finished_at - self.started_at

    @property
    def recovered(self) -> bool:
        """Whether it succeeded after at least one failed try."""
        return self.ok and self.attempts > 1

    @property
    def recovery_time_s(self) -> float | None:
        """From the first failure to the delivered video, for a recovered request whose failure time is known."""
        if not self.recovered or self.first_failed_at is None:
            return None
        return self.finished_at - self.first_failed_at

    @classmethod
    def from_outcome(
        cls, outcome: Outcome[Any], *, started_at: float, finished_at: float, quality_kept: float | None = None
    ) -> RunRow:
        """The row of an engine run: tries, failure types and the model that was used come from ``outcome``; the
        first failure is dated by the first try's duration (every later try follows a failure)."""
        failures = [record.failure_type.value for record in outcome.attempts if record.failure_type is not None]
        first = outcome.attempts[0] if outcome.attempts else None
        first_failed_at = (
            min(started_at + first.duration_s, finished_at)
            if first is not None and first.failure_type is not None
            else None
        )
        return cls(
            correlation_id=outcome.correlation_id,
            started_at=started_at,
            finished_at=finished_at,
            ok=outcome.ok,
            attempts=len(outcome.attempts),
            degraded=outcome.degraded,
            first_failure_type=failures[0] if failures else None,
            final_failure_type=None if outcome.ok or not failures else failures[-1],
            quality_kept=quality_kept,
            model_id=outcome.model_id,
            first_failed_at=first_failed_at,
        )

    def values(self) -> tuple[Any, ...]:
        """The row in the order of the ``runs`` columns."""
        return (
            self.correlation_id,
            self.started_at,
            self.finished_at,
            self.duration_s,
            self.ok,
            self.attempts,
            self.recovered,
            self.degraded,
            self.first_failure_type,
            self.final_failure_type,
            self.quality_kept,
            self.model_id,
            self.first_failed_at,
            self.refused,
        )


class RunSummary(TypedDict):
    """Headline numbers over the kept runs. ``requests`` are the requests that ran; ``refused`` ones (input refused
    before anything ran) are counted apart and in no share. Shares and means are ``None`` while nothing ran."""

    requests: int
    succeeded: int
    recovered: int
    failed: int
    refused: int
    success_share: float | None
    recovered_share: float | None
    rescue_share: float | None
    degraded_share: float | None
    mean_attempts: float | None
    mean_recovery_s: float | None


def sqlite_disk_full(exc: BaseException, path: str | Path) -> StorageFullError | None:
    """SQLite's "database or disk is full" (``SQLITE_FULL``, the kernel's ENOSPC or a quota) on ``path`` as the
    typed error the classifier knows (raise it ``from exc``); ``None`` for any other error."""
    if not (isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL):
        return None
    path = Path(path)
    return StorageFullError(
        f"the disk holding {path.name} is full: the write was not stored (the rows stored before are kept)",
        path=str(path),
    )


class MetricsStore:
    """Rows in ``path``; per table at most ``max_rows`` rows and none older than ``max_age_seconds``, pruned on
    write. ``write_error``: the last write refused for a full disk, until a write succeeds."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int = 100_000,
        max_age_seconds: float = 30 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_rows < 1 or max_age_seconds <= 0:
            raise ValueError(f"bad retention ({max_rows=}, {max_age_seconds=})")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self.write_error: StorageFullError | None = None
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA mmap_size=268435456")  # reads map the file instead of copying pages
        self._db.executescript(_TABLES_SQL)
        self._migrate()
        self._db.executescript(_INDEXES_SQL)

    def _migrate(self) -> None:
        """Bring a file written by an earlier release up to the current columns, in one transaction (two stores
        opening one old file at once must not both add a column).

        Before the ``refused`` column, a refused request was the only kind of run recorded with no try at all, so
        those rows are marked refused; an older run has no ``first_failed_at`` and its recovery time is read from
        the first strategy that acted on it instead; ``request_ok`` is filled in from the runs kept.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                added = {table: self._add_missing_columns(table) for table in _ADDED_COLUMNS}
                if "refused" in added["runs"]:
                    self._db.execute("UPDATE runs SET refused = 1 WHERE attempts = 0 AND NOT ok")
                if added["recovery_attempts"]:
                    self._db.execute(_SET_REQUEST_OK_OF_NEW_ATTEMPTS, (0,))
                for index in (*(_REPLACED_INDEXES if added["runs"] else ()), *_DROPPED_INDEXES):
                    self._db.execute(f"DROP INDEX IF EXISTS {index}")
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                full = sqlite_disk_full(exc, self.path)
                if full is not None:
                    raise full from exc
                raise

    def _add_missing_columns(self, table: str) -> list[str]:
        present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        missing = [column for column in _ADDED_COLUMNS[table] if column not in present]
        for column in missing:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_ADDED_COLUMNS[table][column]}")
        return missing

    def __call__(self, event: events.RecoveryEvent) -> None:
        """Listener: record every ``recovery.strategy_finished`` event of an applicable strategy, and every failure
        the classifier did not recognise (by its class, module and first line, counted)."""
        try:
            if event.name == events.FAILURE_CLASSIFIED and event.data.get("recognised") is False:
                self.record_unrecognised(event.data.get("signature") or {}, event.correlation_id, event.timestamp)
                return
            if event.name != events.STRATEGY_FINISHED or not event.data.get("applicable", True):
                return
            data = event.data
            self.record(
                AttemptRow(
                    event.correlation_id,
                    data["attempt"],
                    data["failure_type"],
                    data["severity"],
                    data["strategy"],
                    bool(data["success"]),
                    float(data["duration_s"]),
                    event.timestamp - float(data["duration_s"]),
                    event.timestamp,
                )
            )
        except StorageFullError:
            pass  # reported by the write itself (write_error and the log); the generation goes on

    # -- writing ----------------------------------------------------------------------------------------------

    def record(self, row: AttemptRow) -> None:
        """Insert one attempt, then apply retention."""
        self.record_many([row])

    def record_many(self, rows: Iterable[AttemptRow]) -> None:
        """Insert attempts in one transaction, then apply retention."""
        self._insert(
            "INSERT",
            "recovery_attempts",
            _ATTEMPT_COLUMNS,
            (astuple(row) for row in rows),
            _SET_REQUEST_OK_OF_NEW_ATTEMPTS,
        )

    def record_unrecognised(self, signature: Mapping[str, Any], correlation_id: str | None, at: float) -> None:
        """Count one error no rule recognised, so the next version of the classifier can learn the frequent ones."""
        key = (
            str(signature.get("error_class", "")),
            str(signature.get("raised_in", "")),
            str(signature.get("first_line", ""))[:200],
        )
        with self._lock, self._writing():
            self._db.execute(
                "INSERT INTO unrecognised_errors VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "seen = seen + 1, last_seen = excluded.last_seen, last_correlation_id = excluded.last_correlation_id",
                (*key, at, at, correlation_id),
            )

    def record_run(self, row: RunRow) -> None:
        """Insert one run (replacing an earlier row of the same correlation id), then apply retention."""
        self.record_runs([row])

    def try_record_run(self, row: RunRow) -> bool:
        """``record_run`` for callers that must not fail because of metrics (a generation): an error is logged
        and answered ``False``."""
        try:
            self.record_run(row)
        except StorageFullError:
            return False  # reported by the write itself (write_error and the log)
        except Exception:
            log.exception("could not record run %s in the metrics store", row.correlation_id)
            return False
        return True

    def record_runs(self, rows: Iterable[RunRow]) -> None:
        """Insert runs in one transaction, then apply retention."""
        self._insert(
            "INSERT OR REPLACE", "runs", _RUN_COLUMNS, (row.values() for row in rows), _SET_REQUEST_OK_OF_NEW_RUNS
        )

    def _insert(
        self, verb: str, table: str, columns: Sequence[str], values: Iterable[tuple[Any, ...]], then: str
    ) -> None:
        """Insert ``values`` into ``table``, run ``then`` with the last id before them, apply retention: one
        transaction."""
        marks = ",".join("?" * len(columns))
        with self._lock, self._writing():
            self._db.execute("BEGIN")
            try:
                last_id = self._db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
                self._db.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)
                self._db.execute(then, (last_id,))
                self._prune()
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write: a full disk becomes ``StorageFullError``, remembered in ``write_error`` and logged with the
        catalogued message (once per spell, not once per row); a write that succeeds clears it."""
        try:
            yield
        except sqlite3.Error as exc:
            full = sqlite_disk_full(exc, self.path)
            if full is None:
                raise
            if self.write_error is None:
                log.warning(
                    "metrics not stored: %s (%s)",
                    guidance_for(EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT).user_message,
                    full,
                )
            self.write_error = full
            raise full from exc
        self.write_error = None

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not already (it may roll back by itself on a full disk, and a
        second ROLLBACK would hide the error that caused it)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _prune(self) -> None:
        for table in _TABLES:
            self._db.execute(f"DELETE FROM {table} WHERE finished_at < ?", (self._clock() - self.max_age_seconds,))
            self._db.execute(f"DELETE FROM {table} WHERE id <= (SELECT max(id) FROM {table}) - ?", (self.max_rows,))

    # -- reading ----------------------------------------------------------------------------------------------

    def count(self) -> int:
        """How many attempt rows are kept."""
        return self._scalar("SELECT count(*) FROM recovery_attempts")

    def count_runs(self) -> int:
        """How many run rows are kept."""
        return self._scalar("SELECT count(*) FROM runs")

    def time_span(self) -> tuple[float, float] | None:
        """The first and last finish time (epoch seconds) over both tables, or ``None`` while they are empty."""
        with self._lock:
            # Two sub-selects: SQLite answers a lone min() or max() from the index without a scan.
            ends = [
                self._db.execute(
                    f"SELECT (SELECT min(finished_at) FROM {table}), (SELECT max(finished_at) FROM {table})"
                ).fetchone()
                for table in _TABLES
            ]
        known = [end for end in ends if end[0] is not None]
        return (min(end[0] for end in known), max(end[1] for end in known)) if known else None

    def _scalar(self, sql: str) -> int:
        with self._lock:
            return int(self._db.execute(sql).fetchone()[0])

    def _frame(self, sql: str, params: tuple[Any, ...] = ()) -> pd.DataFrame:
        import pandas as pd

        with self._lock:
            cursor = self._db.execute(sql, params)
            columns = [description[0] for description in cursor.description]
            return pd.DataFrame(cursor.fetchall(), columns=columns)

    def unrecognised_errors(self, limit: int = 20) -> pd.DataFrame:
        """The errors the classifier did not recognise, most frequent first: class, module, first line, how often."""
        return self._frame(
            "SELECT error_class, raised_in, first_line, seen, first_seen, last_seen FROM unrecognised_errors "
            "ORDER BY seen DESC, last_seen DESC LIMIT ?",
            (limit,),
        )

    def success_rate_by_strategy(self) -> pd.DataFrame:
        """How often the request ended with a video after the strategy acted in it. Columns: strategy, requests
        (finished requests it acted in), successes (those of them where its own step went through and the request
        then delivered a video), success_rate (successes / requests; ``None`` while none has finished), attempts
        (times it ran, requests still running included) and mean_duration_s (its own step's time, not the
        recovery's).

        A strategy whose step "worked" in a request that failed later is no success: a blind retry of a lost
        network connection counts as tried, not as fixed.
        """
        return self._frame(_strategy_outcomes(("strategy",)))

    def failures_over_time(self, bucket_seconds: int = 3600) -> pd.DataFrame:
        """Columns: bucket (UTC time), failure_type, failures (distinct failed tries per bucket)."""
        frame = self._frame(
            "SELECT CAST(finished_at / ?1 AS INTEGER) * ?1 AS bucket, failure_type, "
            "count(DISTINCT coalesce(correlation_id, id) || ':' || attempt) AS failures "
            "FROM recovery_attempts GROUP BY bucket, failure_type ORDER BY bucket, failure_type",
            (bucket_seconds,),
        )
        return _utc(frame, "bucket")

    def recovery_time_distribution(self) -> pd.DataFrame:
        """One row per recovered request: correlation_id, failure_type (its first failure), attempts, degraded,
        recovery_time_s (from the first failure to the delivered video) and finished_at (UTC time).

        A run recorded without ``first_failed_at`` (an earlier release) is dated from the first strategy that acted
        on it; a recovered run with neither is left out rather than guessed.
        """
        frame = self._frame(
            f"{_RECOVERED} SELECT correlation_id, failure_type, attempts, degraded, recovery_time_s, finished_at "
            "FROM recovered WHERE recovery_time_s IS NOT NULL ORDER BY finished_at"
        )
        frame["degraded"] = frame["degraded"].astype(bool)
        return _utc(frame, "finished_at")

    def recovery_time_histogram(self, edges_s: Sequence[float] = DURATION_EDGES_S) -> pd.DataFrame:
        """Recovered requests by recovery time (first failure → delivered video), per first failure type.
        Columns: failure_type, bin (0-based), lower_s, upper_s (``inf`` for the last), requests — counted in SQL.

        Bin ``i`` holds recovery times in ``[edges_s[i-1], edges_s[i])``; empty bins are left out.
        """
        if not edges_s or list(edges_s) != sorted(set(edges_s)) or not all(map(math.isfinite, edges_s)):
            raise ValueError(f"`edges_s` must be finite, strictly increasing and non-empty (got {edges_s!r})")
        cases = " ".join(f"WHEN recovery_time_s < {float(edge)!r} THEN {index}" for index, edge in enumerate(edges_s))
        frame = self._frame(
            f"{_RECOVERED} SELECT failure_type, CASE {cases} ELSE {len(edges_s)} END AS bin, count(*) AS requests "
            "FROM recovered WHERE recovery_time_s IS NOT NULL GROUP BY failure_type, bin ORDER BY failure_type, bin"
        )
        bounds = (0.0, *map(float, edges_s), float("inf"))
        frame.insert(2, "lower_s", [bounds[index] for index in frame["bin"]])
        frame.insert(3, "upper_s", [bounds[index + 1] for index in frame["bin"]])
        return frame

    def strategy_effectiveness(self) -> pd.DataFrame:
        """``success_rate_by_strategy`` per failure type the strategy acted on. Columns: failure_type, strategy,
        requests, successes, success_rate, attempts, mean_duration_s; best strategy first within a type."""
        return self._frame(_strategy_outcomes(("failure_type", "strategy")))

    def runs_over_time(self, bucket_seconds: int = 3600) -> pd.DataFrame:
        """Columns: bucket (UTC time), first_try, recovered, failed, requests, refused — runs per bucket of finish
        time.

        ``first_try``, ``recovered`` and ``failed`` do not overlap: they add up to ``requests``, the requests that
        ran. ``refused`` (input refused before anything ran) is counted apart, not among the failed.
        """
        frame = self._frame(
            "SELECT CAST(finished_at / ?1 AS INTEGER) * ?1 AS bucket, sum(ok AND NOT recovered) AS first_try, "
            "sum(recovered) AS recovered, sum(NOT ok AND NOT refused) AS failed, sum(NOT refused) AS requests, "
            "sum(refused) AS refused "
            "FROM runs GROUP BY bucket ORDER BY bucket",
            (bucket_seconds,),
        )
        return _utc(frame, "bucket")

    def oom_rescue(self) -> pd.DataFrame:
        """Runs whose first failure ran out of memory, per number of tries. Columns: attempts, runs, rescued,
        failed, degraded, mean_quality_kept, min_quality_kept (quality over rescued runs that report it)."""
        return self._frame(
            "SELECT attempts, count(*) AS runs, sum(ok) AS rescued, sum(NOT ok) AS failed, "
            "sum(degraded) AS degraded, avg(CASE WHEN ok THEN quality_kept END) AS mean_quality_kept, "
            "min(CASE WHEN ok THEN quality_kept END) AS min_quality_kept "
            "FROM runs WHERE first_failure_type = ? AND refused = 0 GROUP BY attempts ORDER BY attempts",
            (_OOM,),
        )

    def recent_events(self, limit: int = 50) -> pd.DataFrame:
        """The latest ``limit`` attempts, newest first, with their run's end when it is recorded. Columns: time
        (UTC), correlation_id, failure_type, severity, strategy, success, duration_s, model_id, run (``first try``,
        ``recovered``, ``failed``, or missing while the run is going on)."""
        if limit < 1:
            raise ValueError(f"`limit` must be >= 1 (got {limit!r})")
        frame = self._frame(
            "SELECT a.finished_at AS time, a.correlation_id, a.failure_type, a.severity, a.strategy, a.success, "
            "a.duration_s, r.model_id, CASE WHEN r.id IS NULL THEN NULL WHEN NOT r.ok THEN 'failed' "
            "WHEN r.recovered THEN 'recovered' ELSE 'first try' END AS run "
            "FROM (SELECT * FROM recovery_attempts ORDER BY finished_at DESC, id DESC LIMIT ?) AS a "
            "LEFT JOIN runs AS r ON r.correlation_id = a.correlation_id ORDER BY a.finished_at DESC, a.id DESC",
            (limit,),
        )
        frame["success"] = frame["success"].astype(bool)
        return _utc(frame, "time")

    def summary(self) -> RunSummary:
        """Requests that ran, how many succeeded, recovered and failed, the shares and means behind them, and the
        refused requests apart.

        ``rescue_share`` is recovered over the requests that met a failure: how often recovery saved the day.
        ``mean_recovery_s`` is the mean time from the first failure to the delivered video of recovered requests.
        """
        with self._lock:
            requests, succeeded, recovered, degraded, mean_attempts, refused, met_failure = self._db.execute(
                "SELECT coalesce(sum(NOT refused), 0), coalesce(sum(ok), 0), coalesce(sum(recovered), 0), "
                "coalesce(sum(degraded), 0), avg(CASE WHEN NOT refused THEN attempts END), coalesce(sum(refused), 0), "
                "coalesce(sum(first_failure_type IS NOT NULL AND NOT refused), 0) FROM runs"
            ).fetchone()
            mean_recovery_s = self._db.execute(f"{_RECOVERED} SELECT avg(recovery_time_s) FROM recovered").fetchone()[0]

        def share(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        return RunSummary(
            requests=requests,
            succeeded=succeeded,
            recovered=recovered,
            failed=requests - succeeded,
            refused=refused,
            success_share=share(succeeded, requests),
            recovered_share=share(recovered, requests),
            rescue_share=share(recovered, met_failure),
            degraded_share=share(degraded, requests),
            mean_attempts=mean_attempts,
            mean_recovery_s=mean_recovery_s,
        )

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()


# Recovered runs and their recovery time, first failure to delivered video; an older run without
# ``first_failed_at`` is dated from the first strategy that acted on it (just after its first failure). Materialised,
# so the dating subquery runs once per run, not once per use of ``recovery_time_s`` (a histogram's every bin edge).
_RECOVERED = (
    "WITH recovered AS MATERIALIZED (SELECT r.correlation_id, r.first_failure_type AS failure_type, r.attempts, "
    "r.degraded, r.finished_at, r.finished_at - coalesce(r.first_failed_at, (SELECT min(a.started_at) "
    "FROM recovery_attempts AS a WHERE a.correlation_id = r.correlation_id)) AS recovery_time_s "
    "FROM runs AS r WHERE r.recovered) "
)


def _strategy_outcomes(keys: Sequence[str]) -> str:
    """The SQL of the strategy success queries, grouped by ``keys``: of the finished requests a strategy acted in
    (``request_ok`` known), those where its step went through and the request then ended with a video. Distinct
    requests, so a strategy that ran twice in one request counts that request once."""
    group = ", ".join(keys)
    order = "failure_type, success_rate DESC, strategy" if "failure_type" in keys else "strategy"
    return (
        f"SELECT {group}, requests, successes, CAST(successes AS REAL) / requests AS success_rate, attempts, "
        f"mean_duration_s FROM (SELECT {group}, "
        "count(DISTINCT CASE WHEN request_ok IS NOT NULL THEN correlation_id END) AS requests, "
        "count(DISTINCT CASE WHEN success AND request_ok THEN correlation_id END) AS successes, "
        f"count(*) AS attempts, avg(duration_s) AS mean_duration_s FROM recovery_attempts GROUP BY {group}) "
        f"ORDER BY {order}"
    )


def _utc(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Epoch seconds in ``column`` become UTC timestamps."""
    import pandas as pd

    frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame
