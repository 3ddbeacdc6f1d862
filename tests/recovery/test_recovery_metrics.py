"""The SQLite metrics store: a listener, bounded retention, DataFrame queries."""

from __future__ import annotations

from pathlib import Path

import pytest

import recovery
from recovery import AttemptRow, MetricsStore, events
from recovery.metrics import RunRow


def row(
    strategy: str = "immediate_retry",
    success: bool = True,
    at: float = 1000.0,
    cid: str = "c",
    attempt: int = 1,
    failure_type: str = "vram_exhaustion",
    duration: float = 0.5,
) -> AttemptRow:
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
    store(
        recovery.RecoveryEvent(events.STRATEGY_FINISHED, "c", 1000.0, {**common, "strategy": "b", "applicable": False})
    )
    store(recovery.RecoveryEvent(events.ATTEMPT_STARTED, "c", 1000.0, {"attempt": 1}))
    assert store.success_rate_by_strategy()["strategy"].tolist() == ["a"]


def test_success_rate_per_strategy(store: MetricsStore) -> None:
    """Success rate is successes over attempts per strategy."""
    store.record_many([row(success=True), row(success=False), row("parameter_adjustment", True)])
    frame = store.success_rate_by_strategy().set_index("strategy")
    assert frame.loc["immediate_retry", "success_rate"] == 0.5 and frame.loc["parameter_adjustment", "attempts"] == 1


def test_failures_over_time_counts_distinct_tries(store: MetricsStore) -> None:
    """Two strategies on one failed try count as one failure in its time bucket."""
    store.record_many(
        [
            row("immediate_retry", False),
            row("parameter_adjustment", True),
            row(cid="d", failure_type="network_connectivity_loss"),
        ]
    )
    frame = store.failures_over_time(bucket_seconds=3600)
    assert dict(zip(frame["failure_type"], frame["failures"])) == {"network_connectivity_loss": 1, "vram_exhaustion": 1}


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


# -- runs: one row per request ---------------------------------------------------------------------------------


def run_row(
    cid: str = "r",
    *,
    at: float = 1000.0,
    ok: bool = True,
    attempts: int = 1,
    first: str | None = None,
    final: str | None = None,
    quality: float | None = 1.0,
    degraded: bool = False,
) -> RunRow:
    """A run that finished at ``at`` after taking 10 s."""
    return RunRow(cid, at - 10.0, at, ok, attempts, degraded, first, final, quality, "tiny-wan")


def test_record_run_stores_derived_columns(store: MetricsStore) -> None:
    """A run's duration and its `recovered` flag (ok after more than one try) are stored with it."""
    store.record_run(run_row("a", attempts=3, first="vram_exhaustion", quality=0.5))
    stored = store._db.execute("SELECT duration_s, recovered, ok, quality_kept, model_id FROM runs").fetchone()
    assert stored == (10.0, 1, 1, 0.5, "tiny-wan")


def test_record_run_replaces_the_same_request(store: MetricsStore) -> None:
    """Recording a correlation id again replaces its row: one row per request."""
    store.record_run(run_row("a", ok=False, attempts=1, first="vram_exhaustion", final="vram_exhaustion"))
    store.record_run(run_row("a", attempts=2, first="vram_exhaustion"))
    assert store.count_runs() == 1 and store.summary()["recovered"] == 1


def test_runs_keep_at_most_max_rows(store: MetricsStore, clock) -> None:
    """Beyond `max_rows` the oldest runs are removed on write, as attempts are."""
    store.record_runs(run_row(f"r{index}", at=clock.now) for index in range(80))
    assert store.count_runs() == 50
    assert store._db.execute("SELECT min(correlation_id) FROM runs").fetchone()[0] == "r30"


def test_runs_older_than_max_age_are_removed(store: MetricsStore, clock) -> None:
    """Runs older than `max_age_seconds` disappear at the next write of either table."""
    store.record_run(run_row("old", at=clock.now))
    clock.now += 3601
    store.record(row(at=clock.now))
    assert store.count_runs() == 0


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"attempts": -1}, "attempts"),
        ({"quality_kept": 1.5}, "quality_kept"),
        ({"quality_kept": -0.1}, "quality_kept"),
        ({"finished_at": 900.0}, "finished_at"),
    ],
)
def test_run_row_rejects_bad_values(changes: dict, parameter: str) -> None:
    """A RunRow with an impossible value is refused with the parameter's name."""
    values = {"correlation_id": "r", "started_at": 990.0, "finished_at": 1000.0, "ok": True, "attempts": 1, **changes}
    with pytest.raises(ValueError, match=f"`{parameter}`"):
        RunRow(**values)


def test_run_row_from_a_recovered_outcome(make_engine, halver, oom_attempt) -> None:
    """A run rescued from out-of-memory by smaller settings records its tries and its first failure."""
    outcome = make_engine(adjuster=halver).run(oom_attempt, {"frames": 64}, model_id="tiny-wan")
    entry = RunRow.from_outcome(outcome, started_at=1.0, finished_at=5.0, quality_kept=16 / 64)
    assert (
        entry.ok,
        entry.attempts,
        entry.recovered,
        entry.first_failure_type,
        entry.final_failure_type,
        entry.quality_kept,
        entry.model_id,
    ) == (True, 3, True, "vram_exhaustion", None, 0.25, "tiny-wan")


def test_run_row_from_a_failed_outcome(make_engine, halver, oom_attempt) -> None:
    """A run that recovery cannot save records its first failure and the different one that ended it."""

    def oom_then_denied(parameters: dict, info: recovery.AttemptInfo) -> str:
        oom_attempt(parameters, info)
        raise PermissionError("the output folder is read-only")

    outcome = make_engine(adjuster=halver).run(oom_then_denied, {"frames": 64}, model_id="tiny-wan")
    entry = RunRow.from_outcome(outcome, started_at=1.0, finished_at=2.0)
    assert (entry.ok, entry.recovered, entry.first_failure_type, entry.final_failure_type, entry.quality_kept) == (
        False,
        False,
        "vram_exhaustion",
        "permission_denied",
        None,
    )


def test_runs_over_time_splits_outcomes(store: MetricsStore) -> None:
    """Each bucket counts first-try successes, recoveries and failures apart; they add up to the requests."""
    store.record_runs(
        [
            run_row("a", at=3700.0),
            run_row("b", at=3800.0, attempts=2, first="vram_exhaustion"),
            run_row("c", at=7300.0, ok=False, first="permission_denied", final="permission_denied"),
            run_row("d", at=7400.0),
        ]
    )
    frame = store.runs_over_time(bucket_seconds=3600)
    assert frame[["first_try", "recovered", "failed", "requests"]].values.tolist() == [[1, 1, 0, 2], [1, 0, 1, 2]]
    assert frame["bucket"].dt.hour.tolist() == [1, 2]


def test_oom_rescue_counts_runs_that_first_ran_out_of_memory(store: MetricsStore) -> None:
    """Only runs whose first failure is vram_exhaustion count; quality kept is averaged over rescued ones."""
    oom = "vram_exhaustion"
    store.record_runs(
        [
            run_row("a", attempts=2, first=oom, quality=0.5),
            run_row("b", attempts=2, first=oom),
            run_row("c", attempts=3, first=oom, quality=0.25, degraded=True),
            run_row("d", attempts=3, ok=False, first=oom, final=oom, quality=None),
            run_row("e", attempts=2, first="network_connectivity_loss"),
            run_row("f"),
        ]
    )
    frame = store.oom_rescue()
    assert frame.to_dict("list") == {
        "attempts": [2, 3],
        "runs": [2, 2],
        "rescued": [2, 1],
        "failed": [0, 1],
        "degraded": [0, 1],
        "mean_quality_kept": [0.75, 0.25],
        "min_quality_kept": [0.5, 0.25],
    }


def test_recent_events_are_newest_first_and_bounded(store: MetricsStore) -> None:
    """The table shows the latest `limit` attempts, newest first, with the outcome of their run once known."""
    store.record_many([row(cid="a", at=1000.0), row(cid="b", at=1002.0, success=False), row(cid="c", at=1001.0)])
    store.record_run(run_row("b", ok=False, first="vram_exhaustion", final="vram_exhaustion"))
    frame = store.recent_events(limit=2)
    assert frame["correlation_id"].tolist() == ["b", "c"]
    assert frame["run"].fillna("running").tolist() == ["failed", "running"]
    assert frame["success"].tolist() == [False, True]
    assert list(frame.columns) == [
        "time",
        "correlation_id",
        "failure_type",
        "severity",
        "strategy",
        "success",
        "duration_s",
        "model_id",
        "run",
    ]


def test_summary_shares(store: MetricsStore) -> None:
    """Success and recovered shares are over all requests; the rescue share over those that met a failure."""
    store.record_runs(
        [
            run_row("a"),
            run_row("b", attempts=3, first="vram_exhaustion"),
            run_row("c", ok=False, first="permission_denied", final="permission_denied"),
            run_row("d"),
        ]
    )
    assert store.summary() == {
        "requests": 4,
        "succeeded": 3,
        "recovered": 1,
        "failed": 1,
        "success_share": 0.75,
        "recovered_share": 0.25,
        "rescue_share": 0.5,
        "degraded_share": 0.0,
        "mean_attempts": 1.5,
    }


def test_summary_of_an_empty_store(store: MetricsStore) -> None:
    """With no runs the counts are zero and the shares are None, not a division by zero."""
    summary = store.summary()
    assert (summary["requests"], summary["success_share"], summary["mean_attempts"]) == (0, None, None)


def test_recovery_time_histogram_bins(store: MetricsStore) -> None:
    """Durations fall in [lower, upper) bins per strategy; the last bin is open-ended."""
    store.record_many(
        [row(duration=0.05), row(duration=0.3), row(duration=0.3), row(duration=0.5), row(duration=900.0)]
    )
    frame = store.recovery_time_histogram(edges_s=(0.1, 0.5, 10.0))
    assert frame[["bin", "lower_s", "upper_s", "attempts"]].values.tolist() == [
        [0, 0.0, 0.1, 1],
        [1, 0.1, 0.5, 2],
        [2, 0.5, 10.0, 1],
        [3, 10.0, float("inf"), 1],
    ]


@pytest.mark.parametrize("edges", [(), (1.0, 0.5), (0.5, 0.5), (1.0, float("inf"))])
def test_recovery_time_histogram_rejects_bad_edges(store: MetricsStore, edges: tuple[float, ...]) -> None:
    """Bin edges must be finite and strictly increasing."""
    with pytest.raises(ValueError, match="`edges_s`"):
        store.recovery_time_histogram(edges_s=edges)


def test_time_span_covers_both_tables(store: MetricsStore) -> None:
    """The span runs from the first to the last finish time over attempts and runs; None when empty."""
    assert store.time_span() is None
    store.record(row(at=1500.0))
    store.record_run(run_row(at=1200.0))
    assert store.time_span() == (1200.0, 1500.0)


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            "SELECT attempts, count(*), sum(ok), sum(degraded), avg(quality_kept) FROM runs "
            "WHERE first_failure_type = 'vram_exhaustion' GROUP BY attempts",
            "COVERING INDEX ix_runs_first_failure",
        ),
        (
            "SELECT CAST(finished_at / 3600 AS INTEGER), sum(ok), sum(recovered) FROM runs GROUP BY 1",
            "COVERING INDEX ix_runs_finished",
        ),
        ("SELECT * FROM runs WHERE finished_at < 5", "ix_runs_finished"),
        ("SELECT * FROM runs WHERE correlation_id = 'a'", "ix_runs_correlation"),
    ],
)
def test_run_queries_use_indexes(store: MetricsStore, query: str, index: str) -> None:
    """The runs queries and retention read indexes, not the whole table."""
    assert index in str(store._db.execute(f"EXPLAIN QUERY PLAN {query}").fetchall())


def test_unrecognised_errors_are_counted_most_frequent_first(store: MetricsStore, make_engine, recorded) -> None:
    """An error no rule knows is recorded by class, module and first line; the query lists the frequent ones first,
    each counted once per failure the engine classified."""
    engine = make_engine(metrics=store, max_recovery_attempts=1)

    def frobnicate(_parameters: object, _info: object) -> None:
        raise LookupError("the frobnicator exploded\nat step 3")

    for _ in range(2):
        engine.run(frobnicate, {})
    engine.run(lambda _p, _i: (_ for _ in ()).throw(KeyError("nothing-we-know")), {})
    classified = [e for e in recorded if e.name == events.FAILURE_CLASSIFIED and e.data["recognised"] is False]
    per_class = {
        name: sum(e.data["signature"]["error_class"] == name for e in classified)
        for name in ("builtins.LookupError", "builtins.KeyError")
    }
    frame = store.unrecognised_errors()
    assert list(frame["error_class"]) == ["builtins.LookupError", "builtins.KeyError"]
    assert list(frame["seen"]) == list(per_class.values()) and frame["first_line"][0] == "the frobnicator exploded"


def test_a_recognised_error_is_not_counted_as_unrecognised(store: MetricsStore, make_engine) -> None:
    """A failure a rule recognised leaves the unrecognised table empty."""
    make_engine(metrics=store, max_recovery_attempts=1).run(
        lambda _p, _i: (_ for _ in ()).throw(RuntimeError("No space left on device")), {}
    )
    assert store.unrecognised_errors().empty
