"""The SQLite metrics store: a listener, bounded retention, DataFrame queries."""

from __future__ import annotations

from pathlib import Path

import pytest

import recovery
from recovery import AttemptRow, MetricsStore, events


def row(strategy: str = "immediate_retry", success: bool = True, at: float = 1000.0, cid: str = "c",
        attempt: int = 1, failure_type: str = "vram_exhaustion", duration: float = 0.5) -> AttemptRow:
    return AttemptRow(cid, attempt, failure_type, "medium", strategy, success, duration, at - duration, at)


@pytest.fixture
def store(tmp_path: Path, clock) -> MetricsStore:
    store = MetricsStore(tmp_path / "metrics.sqlite", max_rows=50, max_age_seconds=3600, clock=clock)
    yield store
    store.close()


def test_uses_wal(store: MetricsStore) -> None:
    """The database file runs in WAL mode, so readers do not block the writer."""
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keeps_at_most_max_rows(store: MetricsStore, clock) -> None:
    """Beyond `max_rows` the oldest rows are removed on write."""
    store.record_many(row(at=clock.now) for _ in range(80))
    assert store.count() == 50


def test_removes_rows_older_than_max_age(store: MetricsStore, clock) -> None:
    """Rows older than `max_age_seconds` disappear at the next write."""
    store.record(row(at=clock.now))
    clock.now += 3601
    store.record(row(at=clock.now))
    assert store.count() == 1


def test_listener_records_only_acting_strategies(store: MetricsStore) -> None:
    """strategy_finished events become rows; not-applicable strategies and other events do not."""
    common = dict(attempt=1, failure_type="vram_exhaustion", severity="medium", success=True, duration_s=0.1)
    store(recovery.RecoveryEvent(events.STRATEGY_FINISHED, "c", 1000.0, {**common, "strategy": "a"}))
    store(recovery.RecoveryEvent(events.STRATEGY_FINISHED, "c", 1000.0,
                                 {**common, "strategy": "b", "applicable": False}))
    store(recovery.RecoveryEvent(events.ATTEMPT_STARTED, "c", 1000.0, {"attempt": 1}))
    assert store.success_rate_by_strategy()["strategy"].tolist() == ["a"]


def test_success_rate_per_strategy(store: MetricsStore) -> None:
    """Success rate is successes over attempts per strategy."""
    store.record_many([row(success=True), row(success=False), row("parameter_adjustment", True)])
    frame = store.success_rate_by_strategy().set_index("strategy")
    assert frame.loc["immediate_retry", "success_rate"] == 0.5 and frame.loc["parameter_adjustment",
                                                                             "attempts"] == 1


def test_failures_over_time_counts_distinct_tries(store: MetricsStore) -> None:
    """Two strategies on one failed try count as one failure in its time bucket."""
    store.record_many([row("immediate_retry", False), row("parameter_adjustment", True),
                       row(cid="d", failure_type="network_connectivity_loss")])
    frame = store.failures_over_time(bucket_seconds=3600)
    assert dict(zip(frame["failure_type"], frame["failures"])) == {"network_connectivity_loss": 1,
                                                                   "vram_exhaustion": 1}


def test_recovery_time_distribution_has_one_row_per_attempt(store: MetricsStore) -> None:
    """The distribution query returns every attempt's duration."""
    store.record_many([row(duration=0.25), row(duration=2.0)])
    assert sorted(store.recovery_time_distribution()["duration_s"]) == [0.25, 2.0]


def test_strategy_effectiveness_per_failure_type(store: MetricsStore) -> None:
    """Effectiveness is grouped by failure type and strategy."""
    store.record_many([row(failure_type="a", success=True), row(failure_type="b", success=False)])
    frame = store.strategy_effectiveness().set_index("failure_type")
    assert (frame.loc["a", "success_rate"], frame.loc["b", "success_rate"]) == (1.0, 0.0)


def test_indexes_serve_the_queries(store: MetricsStore) -> None:
    """The time filter uses an index, not a table scan, so 100,000 rows stay fast."""
    plan = store._db.execute("EXPLAIN QUERY PLAN SELECT * FROM recovery_attempts WHERE finished_at < 5").fetchall()
    assert "ix_attempts_finished" in str(plan)
