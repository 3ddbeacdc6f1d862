"""Plotly figures of the recovery metrics, for the app's metrics tab and for notebooks.

Each chart takes the DataFrame of one ``MetricsStore`` query and returns a ``go.Figure``; an empty frame gives a
figure that says "No data yet" rather than raising. ``dashboard(store)`` gathers every figure, the recent-events
table and the summary in one ``MetricsDashboard``. No Gradio here: the app shows what this module returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
]

NO_DATA = "No data yet"
BUCKETS_S: tuple[int, ...] = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 60
OUTCOME_COLOURS = {"first_try": "#4c9a6a", "recovered": "#c9a227", "failed": "#c0504d"}
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


def success_rate_chart(frame: pd.DataFrame) -> go.Figure:
    """Bars of each strategy's success rate, best first, from ``MetricsStore.success_rate_by_strategy()``."""
    title = "Success rate per recovery strategy"
    if frame.empty:
        return empty_figure(title)
    ordered = frame.sort_values(["success_rate", "strategy"], ascending=[False, True])
    bar = go.Bar(
        x=ordered["strategy"].tolist(),
        y=ordered["success_rate"].tolist(),
        customdata=ordered["attempts"].tolist(),
        text=[f"{rate:.0%} of {attempts}" for rate, attempts in zip(ordered["success_rate"], ordered["attempts"])],
        hovertemplate="%{x}: %{y:.1%} of %{customdata} attempts<extra></extra>",
        marker_color=COLOURWAY[0],
    )
    return _figure(title, [bar], yaxis={"title": "success rate", "tickformat": ".0%", "range": [0, 1.05]})


def failures_over_time_chart(frame: pd.DataFrame) -> go.Figure:
    """Failed tries per time bucket, stacked by failure type, from ``MetricsStore.failures_over_time()``."""
    title = "Failures over time, by type"
    if frame.empty:
        return empty_figure(title)
    bars = [
        go.Bar(x=_times(group["bucket"]), y=group["failures"].tolist(), name=str(failure_type))
        for failure_type, group in frame.groupby("failure_type", sort=True)
    ]
    return _figure(title, bars, barmode="stack", yaxis={"title": "failed tries"})


def duration_bin_labels(edges_s: Sequence[float] = DURATION_EDGES_S) -> list[str]:
    """Labels of the recovery-time bins, fastest first: ``< 0.1 s``, ``0.1–0.25 s`` … ``≥ 300 s``."""
    edges = [f"{edge:g}" for edge in edges_s]
    return [f"< {edges[0]} s", *(f"{low}–{high} s" for low, high in zip(edges, edges[1:])), f"≥ {edges[-1]} s"]


def recovery_time_chart(frame: pd.DataFrame, edges_s: Sequence[float] = DURATION_EDGES_S) -> go.Figure:
    """A histogram of recovery time, stacked by strategy, from ``MetricsStore.recovery_time_histogram(edges_s)``."""
    title = "Recovery time distribution"
    if frame.empty:
        return empty_figure(title)
    labels = duration_bin_labels(edges_s)
    bars = [
        go.Bar(x=[labels[index] for index in group["bin"]], y=group["attempts"].tolist(), name=str(strategy))
        for strategy, group in frame.groupby("strategy", sort=True)
    ]
    return _figure(
        title,
        bars,
        barmode="stack",
        yaxis={"title": "attempts"},
        xaxis={
            "title": "time the strategy took",
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
        yaxis={"title": "requests"},
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
    """Requests per time bucket, stacked: first try, recovered, failed; from ``MetricsStore.runs_over_time()``."""
    title = "Requests over time"
    if frame.empty:
        return empty_figure(title)
    names = {"first_try": "first try", "recovered": "recovered", "failed": "failed"}
    buckets = _times(frame["bucket"])
    bars = [
        go.Bar(x=buckets, y=frame[column].tolist(), name=name, marker_color=OUTCOME_COLOURS[column])
        for column, name in names.items()
    ]
    return _figure(title, bars, barmode="stack", yaxis={"title": "requests"})


def effectiveness_chart(frame: pd.DataFrame) -> go.Figure:
    """A failure type × strategy heat map of success rate, from ``MetricsStore.strategy_effectiveness()``."""
    title = "Which strategy fixes which failure"
    if frame.empty:
        return empty_figure(title)
    rates = frame.pivot(index="failure_type", columns="strategy", values="success_rate").sort_index()
    counts = frame.pivot(index="failure_type", columns="strategy", values="attempts").reindex_like(rates)
    heatmap = go.Heatmap(
        z=rates.to_numpy(),
        x=list(rates.columns),
        y=list(rates.index),
        zmin=0,
        zmax=1,
        colorscale="RdYlGn",
        customdata=counts.to_numpy(),
        colorbar={"title": "success", "tickformat": ".0%"},
        hovertemplate="%{y} → %{x}: %{z:.0%} of %{customdata} attempts<extra></extra>",
    )
    return _figure(title, [heatmap])


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
    recent_events: pd.DataFrame
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
        recent_events=store.recent_events(recent),
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


def _times(column: pd.Series) -> list[str]:
    """UTC timestamps as ISO strings, which plotly reads as dates without converting each one again."""
    return column.dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
