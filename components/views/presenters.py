"""Plain text (Markdown) for what the user sees: the live timeline, the result, the failure report.

Shared by the web app and notebooks; returns strings only, no UI objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.views.charts import format_seconds
from components.views.reports import GenerationResult, ServiceEvent, ServiceEventKind
from recovery import events

__all__ = ["timeline_line", "result_markdown", "failure_markdown", "summary_markdown", "scenario_markdown"]

_PHASES = {
    "load": "Loading the model",
    "denoise": "Denoising",
    "decode": "Decoding frames",
    "export": "Writing the mp4",
}


def timeline_line(event: ServiceEvent) -> str | None:
    """One timeline line for an event, or ``None`` for events that only move the progress bar."""
    data = event.data
    if event.kind is ServiceEventKind.CORRECTION:
        return f"- **Corrected** {event.message}"
    if event.kind is ServiceEventKind.PLAN:
        memory = event.message.startswith("planned before running: ")
        return f"- **{'Memory plan' if memory else 'Plan'}**: {event.message.removeprefix('planned before running: ')}"
    if event.kind is ServiceEventKind.DOWNLOAD and event.message == "download.waiting":
        return f"- Waiting for the download of {data.get('model_id', 'the model')} that is already running"
    if event.kind is ServiceEventKind.PHASE:
        return f"- {_PHASES.get(event.message, event.message)} (attempt {data.get('attempt', 1)})"
    if event.kind is not ServiceEventKind.RECOVERY:
        return None
    if event.message == events.FAILURE_CLASSIFIED:
        return f"- **Attempt {data['attempt']} failed**: {data['failure_type']} (severity {data['severity']})"
    if event.message == events.STRATEGY_FINISHED and data.get("applicable", True):
        verdict = "worked" if data.get("success") else "did not help"
        return f"- **Tried** {data['strategy']}: {verdict}"
    if event.message == events.PARAMS_ADJUSTED:
        return "- **Retrying with** " + "; ".join(data.get("changes", ()))
    if event.message == events.RECOVERED:
        return f"- **Recovered** after {data['attempts']} attempts"
    if event.message == events.GAVE_UP:
        return f"- **Gave up**: {data.get('reason', 'no strategy could recover')}"
    return None


def result_markdown(result: GenerationResult) -> str:
    """The result panel: what was made, what we changed, and whether it is degraded."""
    out = result.output
    request = result.request
    lines = []
    if result.degraded:
        lines.append("> **Degraded result** — this is a lower-quality preview, not the video you asked for.")
    lines.append(
        f"**{out.frames} frames · {out.width}×{out.height} · {request.steps} steps · seed {request.seed}** "
        f"in {sum(out.timings.values()):.1f} s on {out.device} ({out.dtype})"
    )
    if result.attempts > 1:
        lines.append(f"Recovered automatically after {result.attempts} attempts.")
    changed = list(result.corrections) + list(result.changes)
    if changed:
        lines.append("**What we changed**")
        lines.extend(f"- {line}" for line in changed)
    lines.extend(f"_{note}_" for note in result.notes)
    return "\n\n".join(lines)


def failure_markdown(report: Mapping[str, Any]) -> str:
    """A failure report (the spec's API error shape) as Markdown: message, detail, steps."""
    error = report["error"]
    lines = [f"**{error['user_message']}**"]
    if error.get("message") and error["message"] not in error["user_message"]:
        lines.append(error["message"])
    if error.get("actionable_steps"):
        lines.append("What you can do:")
        lines.extend(f"- {step}" for step in error["actionable_steps"])
    return "\n\n".join(lines)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The metrics tab's headline: requests that ran, how many succeeded first time, were rescued (and how long the
    rescue took, failure to video), or failed; requests refused before running are counted apart, not as failures."""
    refused = summary.get("refused", 0)
    refused_text = f"{refused} refused before running (invalid input, not counted as failed)"
    if not summary["requests"]:
        if refused:
            return f"**No requests have run yet** · {refused_text}"
        return "**No requests recorded yet.** Generate a video, or run a scenario, and the charts fill in."

    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.0%}"

    mean_recovery = summary.get("mean_recovery_s")
    took = "" if mean_recovery is None else f"; {format_seconds(mean_recovery)} from failure to video on average"
    parts = [
        f"**{summary['requests']} requests ran** · {share(summary['success_share'])} ended with a video",
        f"{summary['recovered']} rescued by recovery ({share(summary['rescue_share'])} of those that hit a failure"
        f"{took})",
        f"{summary['failed']} failed",
        f"{share(summary['degraded_share'])} degraded",
        f"mean attempts {summary['mean_attempts']:.2f}",
    ]
    return " · ".join([*parts, refused_text] if refused else parts)


def scenario_markdown(report: Any) -> str:  # report: components.chaos.scenarios.ScenarioReport
    """One scenario as the Scenarios tab shows it: the fault, the outcome, what the user was told, the timeline."""
    lines = [
        f"### {report.title}: {report.outcome}",
        f"**Fault injected:** {report.fault}",
        f"**Failure types:** {', '.join(report.failure_types) or '—'} · **strategies tried:** "
        f"{' → '.join(report.strategies) or '—'} · {report.seconds:.1f} s",
        f"**What the user was told:** {report.told}",
    ]
    if report.timeline:
        lines.append("**Timeline**\n" + "\n".join(report.timeline))
    lines.extend(f"_Gap: {gap}_" for gap in report.gaps)
    return "\n\n".join(lines)
