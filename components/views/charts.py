"""Plotly figures of the recovery metrics, for the app's metrics tab and for notebooks.

Each chart takes the DataFrame of one ``MetricsStore`` query and returns a ``go.Figure``; an empty frame gives a
figure that says "No data yet" rather than raising. ``dashboard(store)`` gathers every figure, the latest-attempts
table and the summary in one ``MetricsDashboard``. No Gradio here: the app shows what this module returns.

Titles and hovers say what is counted: a strategy's success is its request ending with a video, recovery time runs
from the first failure to the delivered video, counts sit on whole-number axes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import cache
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from recovery.metrics import DURATION_EDGES_S, MetricsStore, RunSummary

__all__ = [
    "NO_DATA",
    "MetricsDashboard",
    "dashboard",
    "duration_bin_labels",
    "pick_bucket_seconds",
    "empty_figure",
    "success_rate_chart",
    "failures_over_time_chart",
    "recovery_time_chart",
    "oom_rescue_chart",
    "runs_over_time_chart",
    "effectiveness_chart",
    "format_seconds",
    "recent_attempts_table",
]

NO_DATA = "No data yet"
BUCKETS_S: tuple[int, ...] = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 60
OUTCOME_COLOURS = {"first_try": "#4c9a6a", "recovered": "#c9a227", "failed": "#c0504d", "refused": "#9aa3ad"}
NICE_STEPS = (1, 2, 5)
MAX_COUNT_TICKS = 8
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
STEP_WORDS = {True: "worked", False: "did not help"}
RUN_ENDINGS = {"first try": "video", "recovered": "video after recovery", "failed": "no video"}
RECENT_COLUMNS = {
    "time": "Local time",
    "correlation_id": "Request",
    "failure_type": "Failure",
    "severity": "Severity",
    "strategy": "Strategy",
    "success": "Its step",
    "duration_s": "Took",
    "model_id": "Model",
    "run": "Request ended",
}
COLOURWAY = (
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
)


def empty_figure(title: str, hint: str = "Figures appear once requests have run.") -> go.Figure:
    """A figure with no traces and a centred "No data yet" note."""
    note = {
        "text": f"<b>{NO_DATA}</b><br>{hint}",
        "x": 0.5,
        "y": 0.5,
        "xref": "paper",
        "yref": "paper",
        "showarrow": False,
        "font": {"size": 15},
    }
    return _figure(title, [], annotations=[note], xaxis={"visible": False}, yaxis={"visible": False})


def format_seconds(seconds: float | None) -> str:
    """A duration as people read it: ``0.42 s``, ``3.5 s``, ``42 s``, ``1 min 3 s``, ``2 h 5 min``; ``–`` if unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    if seconds < 0.005:
        return "< 0.01 s"
    if seconds < 0.995:
        return f"{seconds:.2f} s"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def success_rate_chart(frame: pd.DataFrame) -> go.Figure:
    """Bars of how often each strategy's request ended with a video after it acted, best first, from
    ``MetricsStore.success_rate_by_strategy()``; requests still running are not counted yet."""
    title = "Strategy success: requests that ended with a video after it acted"
    finished = frame[frame["requests"] > 0] if not frame.empty else frame
    if finished.empty:
        return empty_figure(title)
    ordered = finished.sort_values(["success_rate", "strategy"], ascending=[False, True])
    bar = go.Bar(
        x=ordered["strategy"].tolist(),
        y=ordered["success_rate"].tolist(),
        customdata=[
            [int(requests), int(successes), format_seconds(step)]
            for requests, successes, step in zip(ordered["requests"], ordered["successes"], ordered["mean_duration_s"])
        ],
        text=[f"{rate:.0%} of {requests}" for rate, requests in zip(ordered["success_rate"], ordered["requests"])],
        hovertemplate=(
            "%{x}: %{customdata[1]} of the %{customdata[0]} requests it acted in ended with a video (%{y:.0%})"
            "<br>its own step took %{customdata[2]} on average<extra></extra>"
        ),
        marker_color=COLOURWAY[0],
    )
    return _figure(
        title,
        [bar],
        yaxis={"title": "requests ended with a video", "tickformat": ".0%", "range": [0, 1.05]},
    )


def failures_over_time_chart(frame: pd.DataFrame) -> go.Figure:
    """Failed tries per time bucket, stacked by failure type, from ``MetricsStore.failures_over_time()``."""
    title = "Failures over time, by type"
    if frame.empty:
        return empty_figure(title)
    bars = [
        go.Bar(
            x=_times(group["bucket"]),
            y=group["failures"].tolist(),
            name=str(failure_type),
            hovertemplate="%{x}: %{y} failed tries<extra>%{fullData.name}</extra>",
        )
        for failure_type, group in frame.groupby("failure_type", sort=True)
    ]
    top = frame.groupby("bucket")["failures"].sum().max()
    return _figure(title, bars, barmode="stack", yaxis=_count_axis("failed tries", top))


def duration_bin_labels(edges_s: Sequence[float] = DURATION_EDGES_S) -> list[str]:
    """Labels of the recovery-time bins, fastest first: ``< 1 s``, ``1–2.5 s`` … ``30 s–1 min`` … ``≥ 10 min``."""
    edges = [_edge(edge) for edge in edges_s]
    spans = [
        f"{low[0]}–{high[0]} {high[1]}" if low[1] == high[1] else f"{low[0]} {low[1]}–{high[0]} {high[1]}"
        for low, high in zip(edges, edges[1:])
    ]
    return [f"< {' '.join(edges[0])}", *spans, f"≥ {' '.join(edges[-1])}"]


def recovery_time_chart(frame: pd.DataFrame, edges_s: Sequence[float] = DURATION_EDGES_S) -> go.Figure:
    """A histogram of recovered requests by recovery time, from the first failure to the delivered video, stacked
    by that first failure's type; from ``MetricsStore.recovery_time_histogram(edges_s)``."""
    title = "Recovery time: first failure to delivered video"
    if frame.empty:
        return empty_figure(title, "Appears once a request has been recovered.")
    labels = duration_bin_labels(edges_s)
    bars = [
        go.Bar(
            x=[labels[index] for index in group["bin"]],
            y=group["requests"].tolist(),
            name=str(failure_type),
            hovertemplate="%{y} recovered requests took %{x}<extra>%{fullData.name}</extra>",
        )
        for failure_type, group in frame.groupby("failure_type", sort=True)
    ]
    top = frame.groupby("bin")["requests"].sum().max()
    return _figure(
        title,
        bars,
        barmode="stack",
        yaxis=_count_axis("recovered requests", top),
        xaxis={
            "title": "from the first failure to the delivered video",
            "type": "category",
            "categoryorder": "array",
            "categoryarray": labels,
        },
    )


def oom_rescue_chart(frame: pd.DataFrame) -> go.Figure:
    """Out-of-memory requests per number of tries (rescued or failed) and the quality the rescued ones kept,
    from ``MetricsStore.oom_rescue()``."""
    title = "Out-of-memory rescue: tries needed and quality kept"
    if frame.empty:
        return empty_figure(title, "Appears once a request has run out of memory.")
    tries = [f"{attempts} {'try' if attempts == 1 else 'tries'}" for attempts in frame["attempts"]]
    traces = [
        go.Bar(x=tries, y=frame["rescued"].tolist(), name="rescued", marker_color=OUTCOME_COLOURS["recovered"]),
        go.Bar(x=tries, y=frame["failed"].tolist(), name="failed", marker_color=OUTCOME_COLOURS["failed"]),
        go.Scatter(
            x=tries,
            y=frame["mean_quality_kept"].tolist(),
            name="mean quality kept",
            yaxis="y2",
            mode="lines+markers",
            line_color="#333333",
            hovertemplate="%{x}: %{y:.0%} kept<extra></extra>",
        ),
    ]
    return _figure(
        title,
        traces,
        barmode="stack",
        yaxis=_count_axis("requests", (frame["rescued"] + frame["failed"]).max()),
        yaxis2={
            "title": "quality kept (pixel·frames)",
            "overlaying": "y",
            "side": "right",
            "range": [0, 1.05],
            "tickformat": ".0%",
            "showgrid": False,
        },
    )


def runs_over_time_chart(frame: pd.DataFrame) -> go.Figure:
    """Requests per time bucket, stacked: first try, recovered, failed, and (when there are any) refused before
    running — not a failure; from ``MetricsStore.runs_over_time()``."""
    title = "Requests over time"
    if frame.empty:
        return empty_figure(title)
    names = {"first_try": "first try", "recovered": "recovered", "failed": "failed"}
    if "refused" in frame and frame["refused"].sum():
        names["refused"] = "refused (invalid input, nothing ran)"
    buckets = _times(frame["bucket"])
    bars = [
        go.Bar(
            x=buckets,
            y=frame[column].tolist(),
            name=name,
            marker_color=OUTCOME_COLOURS[column],
            hovertemplate="%{x}: %{y} requests<extra>%{fullData.name}</extra>",
        )
        for column, name in names.items()
    ]
    top = frame[list(names)].sum(axis=1).max()
    return _figure(title, bars, barmode="stack", yaxis=_count_axis("requests", top))


def effectiveness_chart(frame: pd.DataFrame) -> go.Figure:
    """A failure type × strategy heat map of how often the request ended with a video after the strategy acted on
    that failure, from ``MetricsStore.strategy_effectiveness()``."""
    title = "Which strategy fixes which failure: requests that ended with a video"
    finished = frame[frame["requests"] > 0] if not frame.empty else frame
    if finished.empty:
        return empty_figure(title)
    rates = finished.pivot(index="failure_type", columns="strategy", values="success_rate").sort_index()
    cells = [
        finished.pivot(index="failure_type", columns="strategy", values=column).reindex_like(rates).to_numpy()
        for column in ("requests", "successes", "mean_duration_s")
    ]
    customdata = [
        [
            [_whole(requests), _whole(successes), format_seconds(step)]
            for requests, successes, step in zip(*(cell[row] for cell in cells))
        ]
        for row in range(len(rates.index))
    ]
    heatmap = go.Heatmap(
        z=rates.to_numpy(),
        x=list(rates.columns),
        y=list(rates.index),
        zmin=0,
        zmax=1,
        colorscale="RdYlGn",
        customdata=customdata,
        hoverongaps=False,
        colorbar={"title": "ended with<br>a video", "tickformat": ".0%"},
        hovertemplate=(
            "%{y} → %{x}: %{customdata[1]} of the %{customdata[0]} requests ended with a video (%{z:.0%})"
            "<br>its own step took %{customdata[2]} on average<extra></extra>"
        ),
    )
    return _figure(title, [heatmap])


def recent_attempts_table(frame: pd.DataFrame, tz: tzinfo | None = None) -> pd.DataFrame:
    """The latest-attempts table as people read it, from ``MetricsStore.recent_events()``: times in ``tz`` (the
    machine's local zone by default) to the second, durations rounded, plain headers, words for outcomes."""
    table = pd.DataFrame(
        {
            "time": [datetime.fromtimestamp(stamp.timestamp(), tz).strftime(TIME_FORMAT) for stamp in frame["time"]],
            "correlation_id": frame["correlation_id"].tolist(),
            "failure_type": frame["failure_type"].tolist(),
            "severity": frame["severity"].tolist(),
            "strategy": frame["strategy"].tolist(),
            "success": [STEP_WORDS[bool(success)] for success in frame["success"]],
            "duration_s": [format_seconds(float(seconds)) for seconds in frame["duration_s"]],
            "model_id": [model if isinstance(model, str) else "–" for model in frame["model_id"]],
            "run": [RUN_ENDINGS.get(run, "running") for run in frame["run"]],
        },
        columns=list(RECENT_COLUMNS),
    )
    return table.rename(columns=RECENT_COLUMNS)


def pick_bucket_seconds(span: tuple[float, float] | None) -> int:
    """The smallest of ``BUCKETS_S`` that shows ``span`` (first, last epoch seconds) in at most 60 buckets."""
    seconds = 0.0 if span is None else span[1] - span[0]
    return next((bucket for bucket in BUCKETS_S if seconds / bucket <= MAX_BUCKETS), BUCKETS_S[-1])


@dataclass(frozen=True)
class MetricsDashboard:
    """Everything the metrics tab shows: the figures, the latest recovery attempts and the headline numbers."""

    runs_over_time: go.Figure
    success_rate: go.Figure
    failures_over_time: go.Figure
    recovery_time: go.Figure
    oom_rescue: go.Figure
    effectiveness: go.Figure
    recent_events: pd.DataFrame  # the latest attempts as ``recent_attempts_table`` shows them
    summary: RunSummary
    bucket_seconds: int

    def figures(self) -> dict[str, go.Figure]:
        """The figures by name, in display order."""
        return {
            "runs_over_time": self.runs_over_time,
            "success_rate": self.success_rate,
            "failures_over_time": self.failures_over_time,
            "recovery_time": self.recovery_time,
            "oom_rescue": self.oom_rescue,
            "effectiveness": self.effectiveness,
        }


def dashboard(store: MetricsStore, *, bucket_seconds: int | None = None, recent: int = 50) -> MetricsDashboard:
    """Query ``store`` (aggregated in SQL) and build every figure; ``bucket_seconds`` defaults to one that shows
    the kept time span in at most 60 buckets."""
    bucket = bucket_seconds or pick_bucket_seconds(store.time_span())
    return MetricsDashboard(
        runs_over_time=runs_over_time_chart(store.runs_over_time(bucket)),
        success_rate=success_rate_chart(store.success_rate_by_strategy()),
        failures_over_time=failures_over_time_chart(store.failures_over_time(bucket)),
        recovery_time=recovery_time_chart(store.recovery_time_histogram()),
        oom_rescue=oom_rescue_chart(store.oom_rescue()),
        effectiveness=effectiveness_chart(store.strategy_effectiveness()),
        recent_events=recent_attempts_table(store.recent_events(recent)),
        summary=store.summary(),
        bucket_seconds=bucket,
    )


@cache
def _template() -> go.layout.Template:
    """A light template, built once: plotly's named templates are large, and every figure copies its template."""
    axis = {"gridcolor": "#ebeef3", "linecolor": "#c8ced8", "zerolinecolor": "#c8ced8", "automargin": True}
    return go.layout.Template(
        layout={
            "colorway": list(COLOURWAY),
            "paper_bgcolor": "white",
            "plot_bgcolor": "white",
            "font": {"size": 13},
            "xaxis": axis,
            "yaxis": axis,
            "margin": {"l": 50, "r": 30, "t": 60, "b": 40},
            "legend": {"orientation": "h", "y": -0.15},
        }
    )


def _figure(title: str, traces: Sequence[go.BaseTraceType], **layout: Any) -> go.Figure:
    """The figure with the house template, built in one pass (later ``update_*`` calls would validate again)."""
    return go.Figure(list(traces), layout={"template": _template(), "title": title, **layout})


def _count_axis(title: str, top: float) -> dict[str, Any]:
    """An axis of counts: ticks on whole numbers only (1, 2 or 5 × 10ⁿ apart, at most about eight), from zero."""
    top = float(top) if math.isfinite(top) else 0.0
    step = next(
        nice * 10**power
        for power in itertools.count()
        for nice in NICE_STEPS
        if top <= nice * 10**power * MAX_COUNT_TICKS
    )
    return {"title": title, "rangemode": "tozero", "tick0": 0, "dtick": step, "tickformat": ",d"}


def _edge(seconds: float) -> tuple[str, str]:
    """A bin edge as (number, unit): whole minutes from a minute up, else seconds."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}", "min"
    return f"{seconds:g}", "s"


def _whole(value: float) -> int | None:
    """A count from a pivoted (float, NaN-holed) frame: an int, or ``None`` for a pair never tried."""
    return None if value is None or math.isnan(value) else int(value)


def _times(column: pd.Series) -> list[str]:
    """UTC timestamps as ISO strings, which plotly reads as dates without converting each one again."""
    return column.dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
