"""The SQLite metrics store: a listener, bounded retention, DataFrame queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
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


def test_success_rate_per_strategy_lists_every_strategy_that_acted(store: MetricsStore) -> None:
    """Each strategy that acted gets one row with the number of times it ran."""
    store.record_many([row(cid="a"), row(cid="a", attempt=2), row("parameter_adjustment", cid="b")])
    frame = store.success_rate_by_strategy().set_index("strategy")
    assert frame["attempts"].to_dict() == {"immediate_retry": 2, "parameter_adjustment": 1}


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


def test_indexes_serve_the_queries(store: MetricsStore) -> None:
    """The time filter uses an index, not a table scan, so 100,000 rows stay fast."""
    plan = store._db.execute("EXPLAIN QUERY PLAN SELECT * FROM recovery_attempts WHERE finished_at < 5").fetchall()
    assert "ix_attempts_finished" in str(plan)


# -- runs: one row per request ---------------------------------------------------------------------------------


def recovered_run(cid: str, *, failed_at: float, video_at: float, first: str = "vram_exhaustion") -> RunRow:
    """A request that started at 0, failed first at ``failed_at`` and delivered its video at ``video_at``."""
    return RunRow(cid, 0.0, video_at, True, 2, first_failure_type=first, first_failed_at=failed_at)


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
        ({"first_failed_at": 980.0}, "first_failed_at"),
        ({"first_failed_at": 1001.0}, "first_failed_at"),
        ({"refused": True}, "refused"),
        ({"refused": True, "ok": False}, "refused"),
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
        "refused": 0,
        "success_share": 0.75,
        "recovered_share": 0.25,
        "rescue_share": 0.5,
        "degraded_share": 0.0,
        "mean_attempts": 1.5,
        "mean_recovery_s": None,
    }


def test_summary_of_an_empty_store(store: MetricsStore) -> None:
    """With no runs the counts are zero and the shares are None, not a division by zero."""
    summary = store.summary()
    assert (summary["requests"], summary["success_share"], summary["mean_attempts"]) == (0, None, None)


def test_recovery_time_histogram_bins(store: MetricsStore) -> None:
    """Recovered requests fall in [lower, upper) bins of recovery time per first failure; the last bin is open."""
    store.record_runs(
        recovered_run(f"r{index}", failed_at=1000.0, video_at=1000.0 + seconds)
        for index, seconds in enumerate((0.05, 0.3, 0.3, 0.5, 900.0))
    )
    frame = store.recovery_time_histogram(edges_s=(0.1, 0.5, 10.0))
    assert frame[["failure_type", "bin", "lower_s", "upper_s", "requests"]].values.tolist() == [
        ["vram_exhaustion", 0, 0.0, 0.1, 1],
        ["vram_exhaustion", 1, 0.1, 0.5, 2],
        ["vram_exhaustion", 2, 0.5, 10.0, 1],
        ["vram_exhaustion", 3, 10.0, float("inf"), 1],
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
            "WHERE first_failure_type = 'vram_exhaustion' AND refused = 0 GROUP BY attempts",
            "COVERING INDEX ix_runs_first_failure",
        ),
        (
            "SELECT CAST(finished_at / 3600 AS INTEGER), sum(ok), sum(recovered), sum(refused) FROM runs GROUP BY 1",
            "COVERING INDEX ix_runs_finished",
        ),
        (
            "SELECT strategy, count(DISTINCT CASE WHEN request_ok IS NOT NULL THEN correlation_id END), "
            "count(DISTINCT CASE WHEN success AND request_ok THEN correlation_id END), count(*), avg(duration_s) "
            "FROM recovery_attempts GROUP BY strategy",
            "COVERING INDEX ix_attempts_strategy_request",
        ),
        (
            "SELECT failure_type, strategy, count(DISTINCT CASE WHEN success AND request_ok THEN correlation_id END), "
            "avg(duration_s) FROM recovery_attempts GROUP BY failure_type, strategy",
            "COVERING INDEX ix_attempts_type_request",
        ),
        ("SELECT min(started_at) FROM recovery_attempts WHERE correlation_id = 'a'", "ix_attempts_request"),
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


# -- what the figures mean: a strategy's success is its request ending with a video ---------------------------


def test_strategy_success_is_the_request_ending_with_a_video(store: MetricsStore) -> None:
    """immediate_retry acted in three requests and one of them ended with a video: 1 of 3, not 3 of 3."""
    store.record_many(row(cid=cid, failure_type="network_connectivity_loss") for cid in ("a", "b", "c"))
    store.record_runs(
        [
            run_row("a", ok=False, attempts=2, first="network_connectivity_loss", final="network_connectivity_loss"),
            run_row("b", ok=False, attempts=2, first="network_connectivity_loss", final="network_connectivity_loss"),
            run_row("c", attempts=2, first="network_connectivity_loss"),
        ]
    )
    strategy = store.success_rate_by_strategy().set_index("strategy").loc["immediate_retry"]
    assert (strategy["requests"], strategy["successes"], strategy["success_rate"]) == (3, 1, pytest.approx(1 / 3))


def test_a_step_that_worked_in_a_request_that_failed_is_no_success(store: MetricsStore) -> None:
    """A retry whose own step went through every time, in requests that all failed, scores 0 %, not 100 %."""
    store.record_many([row(cid="a"), row(cid="a", attempt=2), row(cid="b")])
    store.record_runs(
        run_row(cid, ok=False, attempts=3, first="vram_exhaustion", final="vram_exhaustion") for cid in ("a", "b")
    )
    strategy = store.success_rate_by_strategy().set_index("strategy").loc["immediate_retry"]
    assert (strategy["attempts"], strategy["requests"], strategy["success_rate"]) == (3, 2, 0.0)


def test_a_strategy_whose_step_failed_is_not_credited_with_the_video(store: MetricsStore) -> None:
    """A repair that failed in a request a fallback then saved counts as tried, not as a success."""
    failure = "model_corruption_detected"
    store.record_many(
        [row("automatic_repair", False, cid="a", failure_type=failure), row("intelligent_fallback", cid="a")]
    )
    store.record_run(run_row("a", attempts=2, first=failure))
    rates = store.success_rate_by_strategy().set_index("strategy")["success_rate"].to_dict()
    assert rates == {"automatic_repair": 0.0, "intelligent_fallback": 1.0}


def test_attempts_recorded_after_their_run_still_join_it(store: MetricsStore) -> None:
    """The order of recording does not matter: attempts written after their request's run count for it."""
    store.record_run(run_row("a", attempts=2, first="vram_exhaustion"))
    store.record(row("parameter_adjustment", cid="a"))
    assert store.success_rate_by_strategy()[["requests", "successes"]].values.tolist() == [[1, 1]]


def test_a_run_recorded_again_updates_its_strategies(store: MetricsStore) -> None:
    """A request first recorded as failed, then again as delivered, counts its strategy as a success."""
    store.record(row(cid="a"))
    store.record_run(run_row("a", ok=False, attempts=2, first="vram_exhaustion", final="vram_exhaustion"))
    store.record_run(run_row("a", attempts=2, first="vram_exhaustion"))
    assert store.success_rate_by_strategy()["success_rate"].tolist() == [1.0]


def test_a_request_still_running_is_not_counted_yet(store: MetricsStore) -> None:
    """Attempts of a request with no run recorded yet count as runs of the strategy, not as requests or successes."""
    store.record(row(cid="running"))
    strategy = store.success_rate_by_strategy().set_index("strategy").loc["immediate_retry"]
    assert (strategy["attempts"], strategy["requests"], strategy["successes"]) == (1, 0, 0)
    assert pd.isna(strategy["success_rate"])


def test_strategy_effectiveness_per_failure_type(store: MetricsStore) -> None:
    """Per failure type: the share of requests it acted on that ended with a video, and its own mean step time."""
    net, oom = "network_connectivity_loss", "vram_exhaustion"
    store.record_many(
        [
            row(cid="a", failure_type=net, duration=0.2),
            row(cid="b", failure_type=net, duration=0.4),
            row("parameter_adjustment", cid="c", failure_type=oom),
        ]
    )
    store.record_runs(
        [
            run_row("a", attempts=2, first=net),
            run_row("b", ok=False, attempts=2, first=net, final=net),
            run_row("c", attempts=2, first=oom),
        ]
    )
    frame = store.strategy_effectiveness().set_index(["failure_type", "strategy"])
    assert frame.loc[(net, "immediate_retry"), ["requests", "successes", "success_rate"]].tolist() == [2, 1, 0.5]
    assert frame.loc[(net, "immediate_retry"), "mean_duration_s"] == pytest.approx(0.3)
    assert frame.loc[(oom, "parameter_adjustment"), "success_rate"] == 1.0


# -- recovery time runs from the first failure to the delivered video ---------------------------------------------


def test_recovery_time_runs_from_the_failure_to_the_video(store: MetricsStore) -> None:
    """A request that failed at t=10 and delivered its video at t=120 took 110 s to recover, whatever the strategy's
    own step took."""
    store.record(row("parameter_adjustment", cid="a", at=10.5, duration=0.5))
    store.record_run(recovered_run("a", failed_at=10.0, video_at=120.0))
    frame = store.recovery_time_distribution()
    assert frame[["correlation_id", "failure_type", "recovery_time_s"]].values.tolist() == [
        ["a", "vram_exhaustion", 110.0]
    ]
    assert store.summary()["mean_recovery_s"] == 110.0


def test_only_recovered_requests_have_a_recovery_time(store: MetricsStore) -> None:
    """First-try successes and failed requests are not in the recovery-time distribution."""
    store.record_runs(
        [
            run_row("first-try"),
            run_row("failed", ok=False, attempts=2, first="vram_exhaustion", final="vram_exhaustion"),
            recovered_run("recovered", failed_at=5.0, video_at=35.0),
        ]
    )
    assert store.recovery_time_distribution()["correlation_id"].tolist() == ["recovered"]


def test_an_undated_run_dates_its_failure_from_the_first_strategy(store: MetricsStore) -> None:
    """A recovered run without `first_failed_at` (an earlier release) is timed from its first strategy's start."""
    store.record_many([row(cid="old", at=31.0, duration=1.0), row(cid="old", attempt=2, at=61.0, duration=1.0)])
    store.record_run(RunRow("old", 0.0, 120.0, True, 3, first_failure_type="vram_exhaustion"))
    assert store.recovery_time_distribution()["recovery_time_s"].tolist() == [90.0]


def test_recovery_time_of_an_engine_run(store: MetricsStore, make_engine, halver, clock) -> None:
    """Run for real through the engine: the first try runs out of memory after 10 s, the smaller retry takes 100 s;
    the row from the outcome dates the failure, so the recovery took 100 s and parameter_adjustment succeeded."""

    def slow_oom(parameters: dict, info: recovery.AttemptInfo) -> str:
        clock.now += 10.0 if parameters["frames"] > 17 else 100.0
        if parameters["frames"] > 17:
            raise recovery.OutOfMemoryError("decode ran out of memory", phase="decode", device="cpu")
        return "video"

    started = clock.now
    outcome = make_engine(adjuster=halver, metrics=store).run(slow_oom, {"frames": 33}, correlation_id="e")
    store.record_run(RunRow.from_outcome(outcome, started_at=started, finished_at=clock.now))
    assert store.recovery_time_distribution()["recovery_time_s"].tolist() == [100.0]
    assert store.success_rate_by_strategy().set_index("strategy").loc["parameter_adjustment", "success_rate"] == 1.0


# -- refused requests are not failed requests ------------------------------------------------------------------


def refused_run(cid: str, at: float = 1000.0) -> RunRow:
    """A request whose input was refused before anything ran."""
    return RunRow(cid, at, at, False, 0, False, "invalid_parameters", "invalid_parameters", refused=True)


def test_refused_requests_are_counted_apart_from_failed_ones(store: MetricsStore) -> None:
    """A refused request is in the summary's `refused`, not in `requests`, `failed` or any share."""
    store.record_runs([run_row("a"), run_row("b", ok=False, first="x", final="x"), refused_run("c"), refused_run("d")])
    summary = store.summary()
    assert (summary["requests"], summary["failed"], summary["refused"]) == (2, 1, 2)
    assert (summary["success_share"], summary["rescue_share"], summary["mean_attempts"]) == (0.5, 0.0, 1.0)


def test_runs_over_time_counts_refused_requests_apart(store: MetricsStore) -> None:
    """Per bucket, refused requests have their own column and are not among the failed."""
    store.record_runs([run_row("a", at=3700.0), refused_run("b", at=3800.0)])
    frame = store.runs_over_time(bucket_seconds=3600)
    assert frame[["first_try", "failed", "requests", "refused"]].values.tolist() == [[1, 0, 1, 1]]


# -- an existing metrics file keeps working ---------------------------------------------------------------------

# The schema of the runs table and the indexes as the first release wrote them.
OLD_SCHEMA = """
CREATE TABLE recovery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, correlation_id TEXT, attempt INTEGER NOT NULL, failure_type TEXT NOT NULL,
    severity TEXT NOT NULL, strategy TEXT NOT NULL, success INTEGER NOT NULL, duration_s REAL NOT NULL,
    started_at REAL NOT NULL, finished_at REAL NOT NULL
);
CREATE INDEX ix_attempts_finished ON recovery_attempts (finished_at);
CREATE INDEX ix_attempts_strategy ON recovery_attempts (strategy, success, duration_s);
CREATE INDEX ix_attempts_type ON recovery_attempts (failure_type, strategy, success, duration_s);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, correlation_id TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL NOT NULL, duration_s REAL NOT NULL, ok INTEGER NOT NULL, attempts INTEGER NOT NULL,
    recovered INTEGER NOT NULL, degraded INTEGER NOT NULL, first_failure_type TEXT, final_failure_type TEXT,
    quality_kept REAL, model_id TEXT
);
CREATE UNIQUE INDEX ix_runs_correlation ON runs (correlation_id);
CREATE INDEX ix_runs_finished ON runs (finished_at, ok, recovered);
CREATE INDEX ix_runs_first_failure ON runs (first_failure_type, attempts, ok, degraded, quality_kept);
INSERT INTO runs (correlation_id, started_at, finished_at, duration_s, ok, attempts, recovered, degraded,
    first_failure_type, final_failure_type, quality_kept, model_id) VALUES
    ('refused', 900, 900, 0, 0, 0, 0, 0, 'invalid_parameters', 'invalid_parameters', NULL, NULL),
    ('failed', 900, 950, 50, 0, 2, 0, 0, 'vram_exhaustion', 'vram_exhaustion', NULL, 'tiny-wan');
INSERT INTO recovery_attempts (correlation_id, attempt, failure_type, severity, strategy, success, duration_s,
    started_at, finished_at) VALUES ('failed', 1, 'vram_exhaustion', 'medium', 'immediate_retry', 1, 0.1, 920, 920.1);
"""


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """A metrics file as the first release left it: no `refused`, no `first_failed_at`, a refusal and a failure."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    db.close()
    return path


def test_an_old_file_opens_marks_its_refusals_and_records(old_file: Path, clock) -> None:
    """Opening a first-release file adds the new columns, marks its no-try failures as refused, and new runs land."""
    store = MetricsStore(old_file, clock=clock)
    try:
        store.record_run(recovered_run("new", failed_at=10.0, video_at=40.0))
        summary = store.summary()
        assert (summary["requests"], summary["failed"], summary["refused"], summary["mean_recovery_s"]) == (
            2,
            1,
            1,
            30.0,
        )
    finally:
        store.close()


def test_an_old_file_joins_its_attempts_to_their_runs(old_file: Path, clock) -> None:
    """The attempts of a first-release file count for their requests: a retry in a request that failed, 0 of 1."""
    store = MetricsStore(old_file, clock=clock)
    try:
        frame = store.success_rate_by_strategy()
    finally:
        store.close()
    assert frame[["strategy", "requests", "successes"]].values.tolist() == [["immediate_retry", 1, 0]]


def test_an_old_file_gets_the_current_indexes(old_file: Path, clock) -> None:
    """After the migration the runs indexes cover `refused` and the replaced attempt indexes are gone."""
    MetricsStore(old_file, clock=clock).close()
    with sqlite3.connect(old_file) as db:
        indexed = {row[0]: row[1] for row in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert "refused" in indexed["ix_runs_finished"] and "refused" in indexed["ix_runs_first_failure"]
    assert not {"ix_attempts_strategy", "ix_attempts_type"} & set(indexed)


def test_opening_a_current_file_twice_changes_nothing(tmp_path: Path, clock) -> None:
    """A second open of an up-to-date file keeps its rows and does not try to add a column again."""
    first = MetricsStore(tmp_path / "m.sqlite", clock=clock)
    first.record_run(refused_run("a"))
    first.close()
    store = MetricsStore(tmp_path / "m.sqlite", clock=clock)
    try:
        assert store.summary()["refused"] == 1
    finally:
        store.close()
