"""The metrics tab's figures, built from a real SQLite store filled with attempts and runs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import timedelta, timezone
from pathlib import Path

import plotly.graph_objects as go
import pytest

from components.views import charts
from recovery.metrics import AttemptRow, MetricsStore, RunRow

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HOUR = 3600.0
OOM = "vram_exhaustion"
NET = "network_connectivity_loss"


def attempt(
    strategy: str,
    success: bool,
    *,
    failure: str = OOM,
    cid: str = "a",
    number: int = 1,
    hours_ago: float = 1.0,
    duration: float = 0.5,
) -> AttemptRow:
    """One recovery attempt that finished ``hours_ago`` before NOW."""
    end = NOW - hours_ago * HOUR
    return AttemptRow(cid, number, failure, "medium", strategy, success, duration, end - duration, end)


def request(
    cid: str,
    *,
    ok: bool = True,
    tries: int = 1,
    first: str | None = None,
    kept: float | None = 1.0,
    hours_ago: float = 1.0,
    recovery_s: float | None = None,
) -> RunRow:
    """One request that finished ``hours_ago`` before NOW: a minute, plus ``recovery_s`` from its first failure."""
    end = NOW - hours_ago * HOUR
    failed_at = None if recovery_s is None else end - recovery_s
    start = end - 60.0 - (recovery_s or 0.0)
    return RunRow(cid, start, end, ok, tries, False, first, None if ok else first, kept if ok else None, "m", failed_at)


def refused(cid: str, *, hours_ago: float = 1.0) -> RunRow:
    """One request whose input was refused before anything ran."""
    end = NOW - hours_ago * HOUR
    return RunRow(cid, end, end, False, 0, False, "invalid_parameters", "invalid_parameters", refused=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetricsStore]:
    store = MetricsStore(tmp_path / "metrics.sqlite", max_rows=1000, max_age_seconds=7 * 86400, clock=lambda: NOW)
    yield store
    store.close()


def bars(figure: go.Figure) -> dict[str, dict]:
    """Each trace's name → {x: y}."""
    return {trace.name: dict(zip(trace.x, trace.y)) for trace in figure.data}


def test_success_rate_bars_count_requests_that_ended_with_a_video(store: MetricsStore) -> None:
    """One bar per strategy at the share of its requests that ended with a video, best first; its text and hover
    say how many requests that is out of."""
    store.record_many(
        [
            attempt("immediate_retry", True, cid="a"),
            attempt("immediate_retry", True, cid="b"),
            attempt("parameter_adjustment", True, cid="b"),
        ]
    )
    store.record_runs([request("a", ok=False, tries=2, first=OOM), request("b", tries=3, first=OOM)])
    bar = charts.success_rate_chart(store.success_rate_by_strategy()).data[0]
    assert list(bar.x) == ["parameter_adjustment", "immediate_retry"]
    assert list(bar.y) == [1.0, 0.5] and list(bar.text) == ["100% of 1", "50% of 2"]
    assert [cell[:2] for cell in bar.customdata] == [[1, 1], [2, 1]] and "ended with a video" in bar.hovertemplate


def test_success_rate_waits_for_requests_to_finish(store: MetricsStore) -> None:
    """A strategy whose requests are all still running has no bar yet: the chart says there is no data."""
    store.record(attempt("immediate_retry", True, cid="running"))
    figure = charts.success_rate_chart(store.success_rate_by_strategy())
    assert not figure.data and charts.NO_DATA in figure.layout.annotations[0].text


def test_failures_over_time_stacks_one_trace_per_type(store: MetricsStore) -> None:
    """Failed tries are stacked by failure type, per hour; two strategies on one try count once."""
    store.record_many(
        [
            attempt("parameter_adjustment", False, cid="a", hours_ago=2.5),
            attempt("resource_optimization", True, cid="a", hours_ago=2.5),
            attempt("parameter_adjustment", True, cid="b", hours_ago=0.5),
            attempt("immediate_retry", True, cid="c", failure=NET, hours_ago=0.5),
        ]
    )
    figure = charts.failures_over_time_chart(store.failures_over_time(3600))
    assert figure.layout.barmode == "stack"
    assert bars(figure) == {
        NET: {"2023-11-14T21:00:00Z": 1},
        OOM: {"2023-11-14T19:00:00Z": 1, "2023-11-14T21:00:00Z": 1},
    }


def test_recovery_time_histogram_bins_recovered_requests(store: MetricsStore) -> None:
    """Recovered requests land in the bin of their failure-to-video time, stacked by first failure, on an axis that
    lists every bin in order — not the strategies' own sub-second steps."""
    store.record_many([attempt("immediate_retry", True, cid="a", duration=0.05, failure=NET)])
    store.record_runs(
        [
            request("a", tries=2, first=NET, recovery_s=15.0),
            request("b", tries=2, first=NET, recovery_s=110.0),
            request("c", tries=3, first=OOM, recovery_s=0.5),
            request("d", tries=2, first=OOM, recovery_s=700.0),
        ]
    )
    figure = charts.recovery_time_chart(store.recovery_time_histogram())
    assert bars(figure) == {NET: {"10–20 s": 1, "1–2 min": 1}, OOM: {"< 1 s": 1, "≥ 10 min": 1}}
    assert list(figure.layout.xaxis.categoryarray) == charts.duration_bin_labels()
    assert figure.layout.xaxis.title.text == "from the first failure to the delivered video"


def test_duration_bin_labels_read_in_seconds_then_minutes() -> None:
    """Bins under a minute read in seconds, from a minute up in minutes."""
    assert charts.duration_bin_labels((1.0, 30.0, 60.0, 600.0)) == [
        "< 1 s",
        "1–30 s",
        "30 s–1 min",
        "1–10 min",
        "≥ 10 min",
    ]


def test_oom_rescue_shows_tries_and_quality_kept(store: MetricsStore) -> None:
    """Per number of tries: rescued and failed out-of-memory requests, and the mean quality the rescued kept."""
    store.record_runs(
        [
            request("a", tries=2, first=OOM, kept=0.5),
            request("b", tries=2, first=OOM, kept=1.0),
            request("c", tries=3, first=OOM, kept=0.25),
            request("d", ok=False, tries=3, first=OOM),
            request("e", tries=2, first=NET),
            request("f"),
        ]
    )
    traces = bars(charts.oom_rescue_chart(store.oom_rescue()))
    assert traces == {
        "rescued": {"2 tries": 2, "3 tries": 1},
        "failed": {"2 tries": 0, "3 tries": 1},
        "mean quality kept": {"2 tries": 0.75, "3 tries": 0.25},
    }


def test_oom_rescue_quality_sits_on_its_own_percent_axis(store: MetricsStore) -> None:
    """Quality kept is drawn against a 0–100 % right-hand axis, apart from the request counts."""
    store.record_run(request("a", tries=2, first=OOM, kept=0.5))
    figure = charts.oom_rescue_chart(store.oom_rescue())
    quality = next(trace for trace in figure.data if trace.name == "mean quality kept")
    assert quality.yaxis == "y2" and figure.layout.yaxis2.tickformat == ".0%"


def test_runs_over_time_stacks_outcomes(store: MetricsStore) -> None:
    """Requests per hour are stacked as first try, recovered and failed."""
    store.record_runs(
        [
            request("a", hours_ago=2.5),
            request("b", tries=2, first=OOM, hours_ago=2.5),
            request("c", ok=False, first=NET, hours_ago=0.5),
        ]
    )
    figure = charts.runs_over_time_chart(store.runs_over_time(3600))
    assert bars(figure) == {
        "first try": {"2023-11-14T19:00:00Z": 1, "2023-11-14T21:00:00Z": 0},
        "recovered": {"2023-11-14T19:00:00Z": 1, "2023-11-14T21:00:00Z": 0},
        "failed": {"2023-11-14T19:00:00Z": 0, "2023-11-14T21:00:00Z": 1},
    }


def test_effectiveness_heatmap_cells(store: MetricsStore) -> None:
    """Each failure type × strategy cell holds the share of requests that ended with a video after the strategy acted
    on that failure; pairs never tried stay empty."""
    store.record_many(
        [
            attempt("parameter_adjustment", True, cid="a"),
            attempt("parameter_adjustment", True, cid="b"),
            attempt("immediate_retry", True, cid="c", failure=NET),
        ]
    )
    store.record_runs(
        [
            request("a", tries=2, first=OOM),
            request("b", ok=False, tries=2, first=OOM),
            request("c", tries=2, first=NET),
        ]
    )
    heatmap = charts.effectiveness_chart(store.strategy_effectiveness()).data[0]
    cells = {(y, x): heatmap.z[row][column] for row, y in enumerate(heatmap.y) for column, x in enumerate(heatmap.x)}
    assert cells[(OOM, "parameter_adjustment")] == 0.5 and cells[(NET, "immediate_retry")] == 1.0
    assert math.isnan(cells[(OOM, "immediate_retry")])
    assert "ended with a video" in heatmap.hovertemplate


def test_runs_over_time_shows_refused_requests_apart(store: MetricsStore) -> None:
    """Refused requests get their own grey stack, named as refused, not added to the failed ones."""
    store.record_runs([request("a"), refused("b"), refused("c")])
    traces = bars(charts.runs_over_time_chart(store.runs_over_time(3600)))
    assert traces["failed"] == {"2023-11-14T21:00:00Z": 0}
    assert traces["refused (invalid input, nothing ran)"] == {"2023-11-14T21:00:00Z": 2}


# -- counts sit on whole-number axes ------------------------------------------------------------------------------


def count_figures(store: MetricsStore) -> dict[str, go.Figure]:
    """The dashboard's figures from a store with one recovered out-of-memory request."""
    store.record_many([attempt("parameter_adjustment", True, cid="a")])
    store.record_runs([request("a", tries=2, first=OOM, kept=0.5, recovery_s=30.0)])
    return charts.dashboard(store, bucket_seconds=3600).figures()


@pytest.mark.parametrize("name", ["runs_over_time", "failures_over_time", "recovery_time", "oom_rescue"])
def test_counts_sit_on_whole_number_ticks(store: MetricsStore, name: str) -> None:
    """With a count of one, the axis steps by whole numbers and prints integers, so it never shows 0.5."""
    axis = count_figures(store)[name].layout.yaxis
    assert (axis.tick0, axis.dtick, axis.tickformat, axis.rangemode) == (0, 1, ",d", "tozero")


def test_large_counts_step_by_round_whole_numbers(store: MetricsStore) -> None:
    """150 requests in one bucket are ticked every 20, not every one."""
    store.record_runs(request(f"r{index}") for index in range(150))
    assert charts.runs_over_time_chart(store.runs_over_time(3600)).layout.yaxis.dtick == 20


# -- the latest-attempts table ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.004, "< 0.01 s"),
        (0.006, "0.01 s"),
        (0.42, "0.42 s"),
        (0.996, "1.0 s"),
        (3.14159, "3.1 s"),
        (42.4, "42 s"),
        (59.6, "1 min"),
        (63.2, "1 min 3 s"),
        (7380.0, "2 h 3 min"),
        (float("nan"), "–"),
        (None, "–"),
    ],
)
def test_format_seconds_rounds_for_people(seconds: float | None, text: str) -> None:
    """Durations read as rounded seconds, then minutes and seconds, then hours and minutes."""
    assert charts.format_seconds(seconds) == text


def test_recent_attempts_table_is_readable(store: MetricsStore) -> None:
    """The table has plain headers, times to the second in the given zone, rounded durations and outcomes in
    words."""
    store.record_many(
        [
            attempt("immediate_retry", True, cid="a", hours_ago=0.0, duration=0.4213),
            attempt("automatic_repair", False, cid="b", hours_ago=0.5, duration=63.2),
        ]
    )
    store.record_run(request("a", ok=False, tries=2, first=OOM, hours_ago=0.0))
    table = charts.recent_attempts_table(store.recent_events(), tz=timezone(timedelta(hours=1)))
    assert list(table.columns) == [
        "Local time",
        "Request",
        "Failure",
        "Severity",
        "Strategy",
        "Its step",
        "Took",
        "Model",
        "Request ended",
    ]
    assert table.values.tolist() == [
        ["2023-11-14 23:13:20", "a", OOM, "medium", "immediate_retry", "worked", "0.42 s", "m", "no video"],
        [
            "2023-11-14 22:43:20",
            "b",
            OOM,
            "medium",
            "automatic_repair",
            "did not help",
            "1 min 3 s",
            "–",
            "running",
        ],
    ]


@pytest.mark.parametrize(
    "name", ["runs_over_time", "success_rate", "failures_over_time", "recovery_time", "oom_rescue", "effectiveness"]
)
def test_empty_store_gives_annotated_empty_figures(store: MetricsStore, name: str) -> None:
    """With nothing recorded every figure says "No data yet" instead of raising or drawing empty axes."""
    figure = charts.dashboard(store).figures()[name]
    assert not figure.data and charts.NO_DATA in figure.layout.annotations[0].text
    assert figure.layout.xaxis.visible is False


def test_empty_store_gives_empty_table_and_zero_summary(store: MetricsStore) -> None:
    """With nothing recorded the table has its columns and no rows, and the summary counts zero requests."""
    board = charts.dashboard(store)
    assert board.recent_events.empty and "Request" in board.recent_events.columns
    assert board.summary["requests"] == 0 and board.summary["success_share"] is None


def test_dashboard_gathers_table_and_summary(store: MetricsStore) -> None:
    """The dashboard holds the latest attempts (bounded by `recent`) and the summary of the runs."""
    store.record_many([attempt("immediate_retry", True, cid=f"c{index}", hours_ago=index / 10) for index in range(5)])
    store.record_runs([request("c0", tries=2, first=OOM), request("x")])
    board = charts.dashboard(store, recent=3)
    assert board.recent_events["Request"].tolist() == ["c0", "c1", "c2"]
    assert (board.summary["requests"], board.summary["recovered_share"]) == (2, 0.5)


def test_dashboard_figures_serialise_to_plotly_json(store: MetricsStore) -> None:
    """Every figure of a filled dashboard turns into the JSON a browser plots."""
    store.record_many([attempt("immediate_retry", False), attempt("parameter_adjustment", True, failure=NET)])
    store.record_runs([request("a", tries=2, first=OOM, kept=0.5), request("b", ok=False, first=NET)])
    plotted = {name: json.loads(figure.to_json()) for name, figure in charts.dashboard(store).figures().items()}
    assert all(spec["data"] and spec["layout"]["title"]["text"] for spec in plotted.values())


@pytest.mark.parametrize(
    ("span", "bucket"),
    [
        (None, 60),
        ((0.0, 30 * 60.0), 60),
        ((0.0, 2 * HOUR), 300),
        ((0.0, 2 * 86400.0), 3600),
        ((0.0, 30 * 86400.0), 86400),
        ((0.0, 3650 * 86400.0), 7 * 86400),
    ],
)
def test_bucket_fits_the_span(span: tuple[float, float] | None, bucket: int) -> None:
    """The time bucket is the smallest that shows the kept span in at most 60 bars (capped at a week)."""
    assert charts.pick_bucket_seconds(span) == bucket


def test_dashboard_uses_the_bucket_of_its_span(store: MetricsStore) -> None:
    """Two days of runs are drawn in hourly bars."""
    store.record_runs([request("a", hours_ago=48.0), request("b", hours_ago=0.0)])
    board = charts.dashboard(store)
    assert board.bucket_seconds == 3600 and len(board.runs_over_time.data[0].x) == 2


def test_retention_applies_to_runs(tmp_path: Path) -> None:
    """Runs older than `max_age_seconds`, then beyond `max_rows`, leave the store and so its figures."""
    store = MetricsStore(tmp_path / "m.sqlite", max_rows=3, max_age_seconds=86400, clock=lambda: NOW)
    store.record_runs([request("ancient", hours_ago=25.0), request("a"), request("b")])
    after_age = store.runs_over_time(86400)["requests"].sum()
    store.record_runs(request(f"r{index}", hours_ago=0.5) for index in range(5))
    after_rows = store.runs_over_time(86400)["requests"].sum()
    store.close()
    assert (after_age, after_rows) == (2, 3)
