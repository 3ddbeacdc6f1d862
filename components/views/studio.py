"""The Generate tab's logic, free of Gradio: the form as a request and back, the page's own corrections, size
presets, and a request's run as a sequence of frames (timeline, progress panel, corrected form, notices, video).

``app.py`` lays these out; a notebook or a test drives them the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from components.generation.images import ImageLimits, ImageUse, attach_image, image_use
from components.generation.request import LIMITS, GenerationRequest, Limits
from components.memory.ladder import PlanNotice, PlanOption
from components.views.charts import format_seconds
from components.views.presenters import (
    PhaseBoard,
    failure_markdown,
    form_words,
    result_markdown,
    timeline_line,
)
from components.views.reports import GenerationResult, ServiceEvent, ServiceEventKind
from recovery import events
from recovery.errors import GenerationFailedError, InvalidParameterError
from recovery.messages import failure_label, format_bytes

__all__ = [
    "ASPECTS",
    "CANCELLED_AT_NOTICE",
    "FORM_FIELDS",
    "ImageField",
    "PLAN_BUTTONS",
    "SIZES",
    "WRITTEN_BACK",
    "Notice",
    "PlanPrompt",
    "StudioFrame",
    "StudioRun",
    "cancel_request",
    "check_plan",
    "fallback_default",
    "form_request",
    "form_image",
    "form_values",
    "image_field",
    "image_note",
    "plan_prompt",
    "preset_size",
]

#: The Generate form's fields, in the order of the ``/generate`` endpoint's parameters.
FORM_FIELDS = (
    "prompt",
    "negative_prompt",
    "model_id",
    "width",
    "height",
    "num_frames",
    "steps",
    "guidance_scale",
    "seed",
    "fps",
    "allow_fallback",
)
#: The fields a run writes back into the form (what was really run); text fields are left alone, so typing the
#: next prompt while a video is made is never overwritten.
WRITTEN_BACK = ("width", "height", "num_frames", "steps", "guidance_scale", "seed", "fps")

ASPECTS: dict[str, tuple[int, int]] = {"1:1": (1, 1), "16:9": (16, 9), "9:16": (9, 16), "4:3": (4, 3), "3:4": (3, 4)}
SIZES: dict[str, int] = {"Small (256)": 256, "Medium (480)": 480, "Large (720)": 720}


def form_request(values: Mapping[str, Any], *, limits: Limits = LIMITS) -> tuple[dict[str, Any], list[str]]:
    """The form's values as the service's request, and the corrections the page makes itself (each reported).

    A negative seed asks for a random one (the service draws it and says which). The Steps slider goes down to 0
    so that the browser does not silently raise a 0 to the slider's minimum: the page corrects it, and says so.
    An ``allow_fallback`` left out or ``None`` (an API client that did not say) lets the service decide: another
    model may stand in only for the default model.
    """
    request = {name: values[name] for name in FORM_FIELDS if name in values}
    seed = values.get("seed")
    request["seed"] = None if seed is None or seed < 0 else seed
    allow = values.get("allow_fallback")
    request["allow_fallback"] = None if allow is None else bool(allow)
    corrections = []
    steps = values.get("steps")
    if isinstance(steps, (int, float)) and not isinstance(steps, bool) and 0 <= steps < limits.min_steps:
        corrections.append(f"steps {steps:g} → {limits.min_steps} (a video needs at least one denoising step)")
        request["steps"] = limits.min_steps
    return request, corrections


def form_values(request: Mapping[str, Any], fields: Iterable[str] = WRITTEN_BACK) -> dict[str, Any]:
    """A journaled or past request as the form shows it (whole numbers as ints), for ``fields`` it holds."""
    shown: dict[str, Any] = {}
    for name in fields:
        if name in request and request[name] is not None:
            value = request[name]
            shown[name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return shown


def preset_size(
    aspect: str, size: str, *, limits: Limits = LIMITS, side_multiple: int | None = None
) -> tuple[int, int]:
    """Width and height for an aspect ratio (``"16:9"``) at a size (its short side), within the model's shape rules:
    both sides divisible by ``side_multiple`` (the family's: 16 for Wan 2.1, 32 for LTX-Video and Wan 2.2 5B; default
    ``limits.side_multiple``) and within the limits, the long side capped (shrinking both, so the ratio holds)."""
    across, down = ASPECTS[aspect]
    short = SIZES[size]
    width, height = (short * across / down, short) if across >= down else (short, short * down / across)
    scale = min(1.0, limits.max_side / max(width, height))
    step = side_multiple or limits.side_multiple

    def snap(side: float) -> int:
        return min(limits.max_side, max(limits.min_side, round(side * scale / step) * step))

    return snap(width), snap(height)


def fallback_default(model_id: str | None, default_model: str) -> bool:
    """Whether "Allow another model" starts ticked for ``model_id``: for the configured default model only — a model
    the user named is never replaced unless they tick it themselves."""
    return (model_id or "").strip() == default_model


@dataclass(frozen=True)
class ImageField:
    """How the Generate tab shows its start image for a model: hidden for a text-to-video model (an image there
    would be refused), required for an image-to-video one."""

    use: ImageUse
    visible: bool
    label: str
    info: str


def image_field(model_id: str | None) -> ImageField:
    """The start image's field for ``model_id`` (a model not known by id: optional, its folder decides)."""
    use = image_use((model_id or "").strip())
    if use is ImageUse.NOT_TAKEN:
        return ImageField(use, False, "Start image (not used)", "this model makes videos from text only")
    if use is ImageUse.REQUIRED:
        return ImageField(use, True, "Start image (required)", "this model makes a video from an image")
    if use is ImageUse.OPTIONAL:
        return ImageField(use, True, "Start image (optional)", "the video starts from it; without one, from text")
    return ImageField(use, True, "Start image", "only for image-to-video models")


def form_image(
    request: Mapping[str, Any],
    image: str | None,
    *,
    default_model: str,
    uploads_dir: Any,
    max_bytes: int,
) -> tuple[dict[str, Any], list[str]]:
    """The form's request with its uploaded ``image`` (a file path, or ``None``) prepared at the size the request
    will run at, and the corrections that made ("image 640×480 → cropped and resized to 256×256"). Raises
    ``InvalidParameterError`` naming ``image`` (a format, size or model that does not take one), or the request's
    own first problem."""
    if not image:
        return dict(request), []
    checked = GenerationRequest.from_dict({"model_id": default_model, **request})
    attached, corrections = attach_image(checked, image, uploads_dir, limits=ImageLimits(max_bytes=max_bytes))
    return {**request, "image": attached.image}, corrections


def image_note(corrections: Iterable[str]) -> str:
    """What the page says under a prepared start image: the changes made to it, in the form's words."""
    lines = [form_words(line) for line in corrections]
    return "; ".join(lines) + "." if lines else "Start image used as it is (already at the video's size)."


#: The plan notice's buttons, one per ``PLAN_CHOICES`` entry, as the page words them.
PLAN_BUTTONS = {
    "fewer_frames": "Fewer frames instead",
    "lower_resolution": "Lower resolution instead",
    "run_anyway": "Run anyway",
    "cancel": "Cancel",
}
#: What the page says after "Cancel" at the plan notice.
CANCELLED_AT_NOTICE = "Cancelled at the memory notice: nothing ran."


@dataclass(frozen=True)
class PlanPrompt:
    """The plan notice as the page shows it, before anything runs: ``message`` (Markdown) and, per choice in
    ``PLAN_BUTTONS`` order, its button label (with predicted memory and time) or ``None`` when it is not offered."""

    message: str
    buttons: Mapping[str, str | None]


def _option_label(option: PlanOption) -> str:
    words = PLAN_BUTTONS[option.choice]
    if option.choice == "cancel":
        return words
    memory = format_bytes(option.memory_bytes) if option.memory_bytes else "memory unknown"
    took = f"about {format_seconds(option.time_s)}" if option.time_s is not None else "time unknown"
    return f"{words} · {memory} · {took}"


def plan_prompt(notice: PlanNotice) -> PlanPrompt:
    """A ``PlanNotice`` as the page's notice: the planner's message, what each choice would change, a button each."""
    offered = {option.choice: option for option in notice.choices}
    lines = [f"**Nothing has started yet.** {form_words(notice.message)}"]
    for option in notice.choices:
        if option.changes:
            lines.append(f"- {PLAN_BUTTONS[option.choice]}: " + "; ".join(form_words(line) for line in option.changes))
    buttons = {choice: _option_label(offered[choice]) if choice in offered else None for choice in PLAN_BUTTONS}
    return PlanPrompt("\n".join(lines), buttons)


def check_plan(service: Any, values: Mapping[str, Any], image: str | None = None) -> PlanPrompt | None:
    """Before Generate runs the form's request (and its start ``image``) on ``service`` (a ``GenerationService``):
    the notice to show when memory planning would lower it, else ``None`` (run as asked). A request the service
    refuses gets ``None`` too: ``generate`` then reports the refusal as usual."""
    request, _corrections = form_request(values)
    try:
        request, _lines = form_image(
            request,
            image,
            default_model=service.settings.model,
            uploads_dir=service.settings.uploads_dir,
            max_bytes=service.settings.max_upload_bytes,
        )
        notice = service.plan_notice(request)
    except (GenerationFailedError, InvalidParameterError):
        return None
    return None if notice is None else plan_prompt(notice)


@dataclass(frozen=True)
class Notice:
    """A toast: ``text`` is HTML (a toast renders HTML, not Markdown)."""

    level: Literal["info", "warning"]
    title: str
    text: str


@dataclass(frozen=True)
class StudioFrame:
    """What the page shows at one moment of a run. ``form`` (written-back fields → values) comes once, when the
    service has checked the request; ``video`` with the result."""

    status: str
    progress: str
    video: str | None = None
    form: Mapping[str, Any] | None = None
    notices: tuple[Notice, ...] = ()
    done: bool = False


@dataclass
class StudioRun:
    """One request as the page follows it. ``checked`` returns the request as the service accepted it (from the
    journal: corrected, with the seed it drew), or ``None``; ``page_corrections`` are ``form_request``'s."""

    correlation_id: str
    checked: Callable[[], Mapping[str, Any] | None] = lambda: None
    page_corrections: tuple[str, ...] = ()
    clock: Callable[[], float] = time.monotonic
    timeline: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.board = PhaseBoard(self.correlation_id, self.clock)
        self.timeline.append(f"- Request `{self.correlation_id}` accepted")
        self.timeline.extend(f"- **Corrected** {form_words(line)}" for line in self.page_corrections)
        self._form_sent = False

    def frames(self, stream: Iterable[ServiceEvent]) -> Iterator[StudioFrame]:
        """A frame per event that changes what the page shows (every denoising step does: the bars move)."""
        for event in stream:
            form = self._form()
            if event.kind is ServiceEventKind.RESULT:
                yield self._result(event.data["result"], form)
                return
            notices = self._notices(event)
            changed = self.board.update(event)
            line = timeline_line(event)
            if line:
                self.timeline.append(line)
            if line or changed or notices or form:
                yield StudioFrame("\n".join(self.timeline), self.board.html(), form=form, notices=notices)

    def failed(self, report: Mapping[str, Any]) -> StudioFrame:
        """The last frame of a request that ended without a video: the report above the timeline."""
        self.board.finish(f"Stopped after {self._elapsed()}: {failure_label(report['error'].get('type', ''))}")
        status = failure_markdown(report) + ("\n\n---\n" + "\n".join(self.timeline) if self.timeline else "")
        return StudioFrame(status, self.board.html(), form=self._form(), done=True)

    def _result(self, result: GenerationResult, form: Mapping[str, Any] | None) -> StudioFrame:
        result = replace(result, corrections=(*self.page_corrections, *result.corrections))
        elapsed = self.clock() - self.started
        self.board.finish(f"Done in {self._elapsed()}")
        status = result_markdown(result, elapsed_s=elapsed) + "\n\n---\n" + "\n".join(self.timeline)
        return StudioFrame(status, self.board.html(), video=result.video_path, form=form, done=True)

    def _form(self) -> Mapping[str, Any] | None:
        if self._form_sent:
            return None
        self._form_sent = True
        checked = self.checked()
        return form_values(checked) if checked else None

    def _elapsed(self) -> str:
        seconds = self.clock() - self.started
        return f"{seconds:.1f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"

    @staticmethod
    def _notices(event: ServiceEvent) -> tuple[Notice, ...]:
        if event.kind is not ServiceEventKind.RECOVERY:
            return ()
        data = event.data
        if event.message == events.FAILURE_CLASSIFIED:
            label = failure_label(data["failure_type"])
            return (
                Notice(
                    "warning",
                    "Recovering",
                    f"<p>Attempt {data['attempt']} failed: <strong>{label}</strong>. Recovering…</p>"
                    f"<p><small>details: {data['failure_type']}</small></p>",
                ),
            )
        if event.message == events.RECOVERED:
            return (Notice("info", "Recovered", f"<p>Recovered after {data['attempts']} attempts.</p>"),)
        return ()


def cancel_request(service: Any, correlation_id: str) -> bool:
    """Stop request ``correlation_id`` of ``service`` (a ``GenerationService``): one still waiting never starts,
    one running stops at its next denoising step or decoder chunk. ``True`` when there was something to stop."""
    return bool(service.cancel(correlation_id))
