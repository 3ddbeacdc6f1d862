"""Plain text (Markdown) for what the user sees: the live timeline, the result, the failure report.

Shared by the web app and notebooks; returns strings only, no UI objects.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.views.charts import format_seconds
from components.views.reports import GenerationResult, ServiceEvent, ServiceEventKind
from recovery import events
from recovery.messages import failure_label, strategy_label

__all__ = [
    "FORM_LABELS",
    "PHASES",
    "PhaseBoard",
    "change_banner",
    "failure_html",
    "failure_markdown",
    "form_words",
    "result_markdown",
    "scenario_markdown",
    "summary_markdown",
    "timeline_line",
]

#: The four phases of one attempt, in order, as the page names them.
PHASES = {
    "load": "Loading the model",
    "denoise": "Denoising",
    "decode": "Decoding frames",
    "export": "Writing the mp4",
}

#: The form's label for each request parameter: what a message shown on the page calls it.
FORM_LABELS = {
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "model_id": "Model",
    "width": "Width",
    "height": "Height",
    "num_frames": "Frames",
    "steps": "Steps",
    "guidance_scale": "Guidance scale",
    "seed": "Seed",
    "fps": "Frames per second",
    "image": "Start image",
}
_SWITCHES = {
    "vae_tiling": "VAE tiling",
    "model_cpu_offload": "Model CPU offload",
    "group_offload": "Group offload",
    "layerwise_casting": "Layerwise casting (fp8 weights)",
    "sequential_offload": "Sequential CPU offload",
    "streamed_decode": "Streamed decode",
}
_WORDS = {**FORM_LABELS, **_SWITCHES}
_NAMES = "|".join(sorted(_WORDS, key=len, reverse=True))
_QUOTED = re.compile(rf"`({_NAMES})`")
# A parameter name that starts a line or a "; "-separated change, or stands before its value ("num_frames 33 → 17").
_BARE = re.compile(rf"(?:(?<=^)|(?<=; )|(?<=\n)|(?<=\()|(?<=: ))({_NAMES})\b(?= -?\d| chosen|$| must| →| on | off )")


# A memory plan's line: automatic ("planned before running: ...") or the user's answer to the plan notice.
_PLANNED = re.compile(r"planned before running(?: \(your choice: (\w+)\))?: ")


def form_words(text: str) -> str:
    """Parameter names as the form labels them: ``"`num_frames` must be 4k+1"`` → ``"Frames must be 4k+1"``,
    ``"num_frames 33 → 17"`` → ``"Frames 33 → 17"``; other words stay as they are."""
    text = _QUOTED.sub(lambda m: _WORDS[m.group(1)], text)
    return _BARE.sub(lambda m: _WORDS[m.group(1)], text)


def timeline_line(event: ServiceEvent) -> str | None:
    """One timeline line for an event, or ``None`` for events that only move the progress bar."""
    data = event.data
    if event.kind is ServiceEventKind.CORRECTION:
        return f"- **Corrected** {form_words(event.message)}"
    if event.kind is ServiceEventKind.PLAN:
        planned = _PLANNED.match(event.message)
        if planned is None:
            return f"- **Plan**: {form_words(event.message)}"
        chosen = " (your choice at the memory notice)" if planned.group(1) else ""
        return f"- **Memory plan**{chosen}: {form_words(event.message[planned.end() :])}"
    if event.kind is ServiceEventKind.DOWNLOAD and event.message == "download.waiting":
        return f"- Waiting for the download of {data.get('model_id', 'the model')} that is already running"
    if event.kind is ServiceEventKind.PHASE:
        where = f", on {data['replica']}" if data.get("replica") else ""  # the Ray backend names its replica
        return f"- {PHASES.get(event.message, event.message)} (attempt {data.get('attempt', 1)}{where})"
    if event.kind is not ServiceEventKind.RECOVERY:
        return None
    if event.message == events.FAILURE_CLASSIFIED:
        return (
            f"- **Attempt {data['attempt']} failed**: {failure_label(data['failure_type'])}"
            f"  \n  _details: {data['failure_type']}, severity {data['severity']}_"
        )
    if event.message == events.STRATEGY_FINISHED and data.get("applicable", True):
        verdict = "worked" if data.get("success") else "did not help"
        return f"- **{strategy_label(data['strategy'])}**: {verdict}  \n  _details: {data['strategy']}_"
    if event.message == events.PARAMS_ADJUSTED:
        return "- **Retrying with** " + "; ".join(form_words(change) for change in data.get("changes", ()))
    if event.message == events.RECOVERED:
        return f"- **Recovered** after {data['attempts']} attempts"
    if event.message == events.GAVE_UP:
        return f"- **Gave up**: {data.get('reason', 'no strategy could recover')}"
    return None


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value // 60:.0f} min {value % 60:.0f} s"


def result_markdown(result: GenerationResult, *, elapsed_s: float | None = None) -> str:
    """The result panel: what was made, how long the whole request and each attempt took, what we changed, and
    whether it is degraded. ``elapsed_s``: the whole request as its caller measured it (queue and recovery in)."""
    out = result.output
    request = result.request
    lines = []
    banner = change_banner(result)
    if banner:
        lines.append(banner)
    if result.degraded:
        lines.append("> **Degraded result** — this is a lower-quality preview, not the video you asked for.")
    records = result.attempt_records
    whole = elapsed_s if elapsed_s is not None else sum(record.duration_s for record in records) or None
    took = f" in {_seconds(whole)}" if whole is not None else f" in {sum(out.timings.values()):.1f} s"
    lines.append(
        f"**{out.frames} frames · {out.width}×{out.height} · {request.steps} steps · seed {request.seed}**"
        f"{took} on {out.device} ({out.dtype})"
    )
    if len(records) > 1:
        tries = " · ".join(
            f"attempt {record.number}: {_seconds(record.duration_s)}"
            + (f" ({failure_label(record.failure_type.value)})" if record.failure_type is not None else "")
            for record in records
        )
        lines.append(f"Recovered automatically after {result.attempts} attempts — {tries}.")
    elif result.attempts > 1:
        lines.append(f"Recovered automatically after {result.attempts} attempts.")
    changed = list(result.corrections) + list(result.changes)
    if changed:
        lines.append("**What we changed**")
        lines.extend(f"- {form_words(line)}" for line in changed)
    if out.precision_note:
        lines.append(f"_{out.precision_note}_")
    shown = _banner_notes(result)
    lines.extend(f"_{note}_" for note in result.notes if note not in shown)
    return "\n\n".join(lines)


_LOWERED = "Not the video you asked for"


def _fallback_note(result: GenerationResult) -> str | None:
    if not (result.fallback_from and result.fallback_to):
        return None
    start = f"Made with {result.fallback_to} instead of {result.fallback_from}"
    return next((note for note in result.notes if note.startswith(start)), None)


def _banner_notes(result: GenerationResult) -> set[str]:
    """The notes the change banner shows (a fallback's, a lowered size's): not repeated under the details."""
    if not result.changed:
        return set()
    fallback = _fallback_note(result)
    return {note for note in result.notes if note == fallback or note.startswith(_LOWERED)}


def change_banner(result: GenerationResult) -> str | None:
    """The banner of a changed result, above its details: another model made it ("Made with X instead of Y", both
    named), or its frames or resolution were lowered (what changed, from → to). ``None`` for a result as asked.
    A degraded preview has its own line (``result_markdown``)."""
    if not result.changed:
        return None
    lines = []
    if result.fallback_from and result.fallback_to:
        lines.append(f"> ### Made with {result.fallback_to} instead of {result.fallback_from}")
        reason = (_fallback_note(result) or "").partition(" (another model was allowed)")[2].lstrip(":. ")
        lines.append(f"> Another model was allowed{f' — {reason}' if reason else '.'}")
    for note in result.notes:
        if note.startswith(_LOWERED):
            text = note.removeprefix(f"{_LOWERED}: ").removesuffix(" — see the changes.")
            lines.append(f"> **Changed result** — not the video you asked for: {text}.")
    return "\n>\n".join(lines) if lines else None


def _failure_parts(report: Mapping[str, Any]) -> tuple[str, str | None, list[str], str]:
    """Headline, detail, steps and type of a failure report, in the page's words. A refusal of a setting says
    which one and why; it never claims corrections that were not made."""
    error = report["error"]
    headline, detail = error["user_message"], error.get("message") or None
    if error.get("type") == "invalid_parameters" and detail:
        headline, detail = f"A setting is not valid: {form_words(detail)}.", None
    elif detail and detail in headline:
        detail = None
    steps = [form_words(step) for step in error.get("actionable_steps") or ()]
    return headline, form_words(detail) if detail else None, steps, str(error.get("type", ""))


def failure_markdown(report: Mapping[str, Any]) -> str:
    """A failure report (the spec's API error shape) as Markdown: message, detail, steps."""
    headline, detail, steps, _type = _failure_parts(report)
    lines = [f"**{headline}**"]
    if detail:
        lines.append(detail)
    if steps:
        lines.append("What you can do:")
        lines.extend(f"- {step}" for step in steps)
    return "\n\n".join(lines)


def failure_html(report: Mapping[str, Any]) -> str:
    """The same report as HTML for a toast (a toast renders HTML, not Markdown), with the failure type in plain
    words and its technical name on a details line."""
    headline, detail, steps, kind = _failure_parts(report)
    parts = [f"<p><strong>{_escape(headline)}</strong></p>"]
    if detail:
        parts.append(f"<p>{_escape(detail)}</p>")
    if steps:
        items = "".join(f"<li>{_escape(step)}</li>" for step in steps)
        parts.append(f"<p>What you can do:</p><ul>{items}</ul>")
    if kind:
        parts.append(f"<p><small>{_escape(failure_label(kind))} · details: {_escape(kind)}</small></p>")
    return "".join(parts)


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


@dataclass
class PhaseBoard:
    """The progress panel of one request: a bar per phase of the current attempt (load, denoise, decode, write),
    the download inside loading, and the time left. The ETA is the service's (``eta_s``, ``phase_eta_s`` in the
    events' data) when it sends one; else, while denoising, the steps' own pace predicts the phase's end."""

    correlation_id: str = ""
    clock: Callable[[], float] = time.monotonic
    attempt: int = 1
    phase: str | None = None
    done: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    eta_s: float | None = None
    phase_eta_s: float | None = None
    finished: str | None = None
    _phase_started: float = 0.0
    _step_times: list[float] = field(default_factory=list)

    def update(self, event: ServiceEvent) -> bool:
        """Take one event; ``True`` when the panel changed."""
        data = event.data
        if event.kind is ServiceEventKind.PHASE:
            attempt = int(data.get("attempt", self.attempt))
            if attempt != self.attempt:
                self.attempt, self.done = attempt, {}
            if self.phase and self.phase != event.message:
                self.done[self.phase] = 1.0
            self.phase, self.detail, self._phase_started, self._step_times = event.message, "", self.clock(), []
            self.done.setdefault(event.message, 0.0)
            self._eta(data)
            return True
        if event.kind is ServiceEventKind.PROGRESS and data.get("total"):
            phase = str(data.get("phase") or "denoise")
            if phase != self.phase:
                if self.phase:
                    self.done[self.phase] = 1.0
                self.phase, self._step_times = phase, []
            step, total = int(data["step"]), int(data["total"])
            self.done[phase] = step / total
            self.detail = f"step {step}/{total}" if phase == "denoise" else f"{step}/{total}"
            self._step_times.append(self.clock())
            if not self._eta(data) and len(self._step_times) >= 2:
                pace = (self._step_times[-1] - self._step_times[0]) / (len(self._step_times) - 1)
                self.phase_eta_s, self.eta_s = pace * (total - step), None
            return True
        if event.kind is ServiceEventKind.DOWNLOAD and data.get("bytes_total"):
            self.phase = "load"
            self.done["load"] = data["bytes_done"] / data["bytes_total"]
            self.detail = f"downloading {data.get('model_id', 'the model')}"
            self.phase_eta_s = data.get("eta_s")
            return True
        if event.kind is ServiceEventKind.RECOVERY and event.message == events.FAILURE_CLASSIFIED:
            self.detail = f"attempt {data.get('attempt', self.attempt)} failed: recovering"
            self.eta_s = self.phase_eta_s = None
            return True
        return False

    def _eta(self, data: Mapping[str, Any]) -> bool:
        if data.get("eta_s") is None and data.get("phase_eta_s") is None:
            return False
        self.eta_s, self.phase_eta_s = data.get("eta_s"), data.get("phase_eta_s")
        return True

    def finish(self, text: str) -> None:
        """The request ended (a video, a failure, a stop): ``text`` replaces the bars' caption."""
        self.finished = text
        if self.phase and text.startswith("Done"):
            self.done = {phase: 1.0 for phase in PHASES}

    def html(self) -> str:
        """The panel as HTML: one labelled ``<progress>`` per phase, the ETA and the request's id."""
        rows = []
        for phase, name in PHASES.items():
            share = self.done.get(phase)
            active = phase == self.phase and self.finished is None
            value = f' value="{share:.3f}" max="1"' if share is not None and (share > 0 or not active) else ""
            caption = _escape(self.detail) if active and self.detail else ""
            rows.append(
                f'<div class="phase{" active" if active else ""}"><span class="phase-name">{name}</span>'
                f'<progress aria-label="{name}"{value}></progress><span class="phase-detail">{caption}</span></div>'
            )
        if self.finished is not None:
            status = _escape(self.finished)
        else:
            left = []
            if self.eta_s is not None:
                left.append(f"about {_seconds(self.eta_s)} left")
            if self.phase_eta_s is not None and self.phase:
                left.append(f"{PHASES.get(self.phase, self.phase).lower()}: {_seconds(self.phase_eta_s)}")
            status = f"Attempt {self.attempt}" + (" · " + " · ".join(left) if left else "")
        rid = f" · request <code>{_escape(self.correlation_id)}</code>" if self.correlation_id else ""
        return f'<div class="phase-board">{"".join(rows)}<p class="phase-eta">{status}{rid}</p></div>'


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
        f"**{summary['requests']} {'request' if summary['requests'] == 1 else 'requests'} ran** · "
        f"{share(summary['success_share'])} ended with a video",
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
