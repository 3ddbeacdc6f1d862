"""What the service hands out, and how its reports are built: the events a user sees happen, the finished result
with its story, and the spec's error report for a request that ends without a video.

``components.views.presenters`` turns these into text; ``components.service`` sends them; ``components.journal``
files them. Reports are plain words: the catalogue's messages (``recovery.messages``), scrubbed of paths and tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from components.generation.families import tiny_model_ids
from components.generation.images import shown_request
from components.generation.request import GenerationOutput, GenerationRequest
from components.memory.ladder import MemoryPlan
from recovery.errors import GenerationFailedError, InvalidParameterError, KintsugiError, RequestExistsError
from recovery.messages import api_error, format_bytes, guidance_for
from recovery.outcome import AttemptRecord, Outcome
from recovery.strategies.defaults import DEFAULT_STRATEGY_MAP
from recovery.taxonomy import ErrorContext, RecoveryStrategy

__all__ = [
    "ALLOW_FALLBACK_STEP",
    "EMBEDDED_MODEL_NOTE",
    "GenerationResult",
    "Reporter",
    "ServiceEvent",
    "ServiceEventKind",
]

EMBEDDED_MODEL_NOTE = (
    "Made with the built-in tiny model: its weights are random, so the video is coloured noise. "
    "Choose a real model (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) where a network and a GPU are available."
)
#: The step added to a failure that another model could have rescued, had the request allowed one.
ALLOW_FALLBACK_STEP = (
    "Or allow another model (tick “Allow another model”, or send allow_fallback: true) and a model that runs "
    "here stands in, named in the result."
)
# The failure types whose recovery includes switching the model: only for those would consent have helped.
_FALLBACK_TYPES = frozenset(
    t for t, order in DEFAULT_STRATEGY_MAP.items() if RecoveryStrategy.INTELLIGENT_FALLBACK in order
)


class ServiceEventKind(str, Enum):
    """What a ``ServiceEvent`` tells (a ``str``: ``ServiceEventKind.RESULT == "result"``)."""

    CORRECTION = "correction"  # a parameter corrected at validation
    PLAN = "plan"  # a change made before running (memory plan, a speed-up left off); data: degraded, changed
    DOWNLOAD = "download"  # model bytes arriving, or waiting for a download already running
    PHASE = "phase"  # load / denoise / decode / export started; data: phase, attempt, eta_s, phase_eta_s
    PROGRESS = "progress"  # a step done (data: phase denoise|decode, step, total, attempt, eta_s, phase_eta_s)
    RECOVERY = "recovery"  # an event of the recovery engine (classified, strategy tried, recovered, gave up)
    RESULT = "result"  # the end: ``data["result"]`` is the ``GenerationResult``

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ServiceEvent:
    """One thing the user can see happen."""

    kind: ServiceEventKind
    message: str
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ServiceEventKind(self.kind))  # "result" is taken for RESULT


@dataclass(frozen=True)
class GenerationResult:
    """A finished video and the story of how it was made.

    ``changed``: the video is not the one asked for — memory planning lowered its frames or resolution before it
    ran (or recovery did, after running out of memory), another model stood in (``fallback_from`` →
    ``fallback_to``, only with the user's consent), or it is a labelled preview (``degraded``, which keeps its
    meaning: a lower-quality stand-in). ``notes`` has one line per such change, naming what changed (both models,
    for a fallback).
    """

    video_path: str
    request: GenerationRequest
    corrections: tuple[str, ...]
    changes: tuple[str, ...]
    degraded: bool
    attempts: int
    correlation_id: str
    output: GenerationOutput
    notes: tuple[str, ...] = ()
    attempt_records: tuple[AttemptRecord, ...] = ()  # every try, with its duration and how it failed
    changed: bool = False
    fallback_from: str | None = None  # the model asked for, when another one made the video
    fallback_to: str | None = None  # the model that made it instead

    @property
    def recovered(self) -> bool:
        return self.attempts > 1

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able data for an API client: no file paths (the video by file name only)."""
        return {
            "video": self.video_path.rsplit("/", 1)[-1],
            "correlation_id": self.correlation_id,
            "attempts": self.attempts,
            "degraded": self.degraded,
            "changed": self.changed,
            "fallback_from": self.fallback_from,
            "fallback_to": self.fallback_to,
            "corrections": list(self.corrections),
            "changes": list(self.changes),
            "notes": list(self.notes),
            "request": shown_request(self.request.to_dict()),  # an image by file name, like the video
            "timings": dict(self.output.timings),
            "frames_sha256": self.output.frames_sha256,
        }


Categorize = Callable[[BaseException, Mapping[str, Any]], ErrorContext]


@dataclass(frozen=True)
class Reporter:
    """Builds the service's reports. ``categorize`` is the recovery engine's classifier; ``data_dir`` is scrubbed
    from every message."""

    categorize: Categorize
    data_dir: str

    def result(
        self, outcome: Outcome[GenerationOutput], plan: MemoryPlan, corrections: list[str], *, kept_bytes: int = 0
    ) -> GenerationResult:
        """The result of a request that ended with a video. ``kept_bytes``: what is left on disk of the requested
        model's download when another model stood in for it."""
        output = outcome.value
        assert output is not None
        asked = plan.asked or plan.request
        fallback_to = output.request.model_id if output.request.model_id != asked.model_id else None
        notes: tuple[str, ...] = ()
        if fallback_to is not None:
            notes += (self._fallback_note(outcome, asked.model_id, fallback_to),)
        lowered = _described(output.request) != _described(asked)
        if lowered:
            how = "memory planning changed it before it ran" if plan.planned_down else "recovery lowered it to fit"
            shapes = f"{_described(asked)} → {_described(output.request)}"
            notes += (f"Not the video you asked for: {how} ({shapes}) — see the changes.",)
        if output.request.model_id in tiny_model_ids():
            notes += (EMBEDDED_MODEL_NOTE,)
        if kept_bytes:
            notes += (
                f"The download of {plan.request.model_id} stopped with {format_bytes(kept_bytes)} on disk. It "
                "is kept and resumes from there (Models tab → Download, or your next request for it); a "
                "clean-up there frees it.",
            )
        return GenerationResult(
            video_path=output.video_path,
            request=output.request,
            corrections=tuple(corrections),
            changes=(*plan.changes, *outcome.changes),
            degraded=outcome.degraded or plan.degraded,
            attempts=len(outcome.attempts),
            correlation_id=outcome.correlation_id,
            output=output,
            notes=notes,
            attempt_records=outcome.attempts,
            changed=bool(fallback_to) or lowered or outcome.degraded or plan.degraded,
            fallback_from=asked.model_id if fallback_to else None,
            fallback_to=fallback_to,
        )

    @staticmethod
    def _fallback_note(outcome: Outcome[GenerationOutput], asked: str, used: str) -> str:
        """Both models, and why the one asked for could not make the video (its failure's catalogued words)."""
        failure = next((a.failure_type for a in outcome.attempts if a.model_id == asked and a.failure_type), None)
        why = f": {guidance_for(failure).user_message}" if failure is not None else "."
        return f"Made with {used} instead of {asked} (another model was allowed){why}"

    def failure(
        self, error: BaseException | None, correlation_id: str | None, request: Any, outcome: Outcome[Any] | None = None
    ) -> GenerationFailedError:
        """The catalogued, scrubbed report for a request that ends without a video."""
        report = outcome.api_error(data_dir=self.data_dir) if outcome is not None else None
        if report is None:
            parameters = request.to_dict() if isinstance(request, GenerationRequest) else {}
            ctx = self.categorize(
                error or KintsugiError("unknown failure"),
                {
                    "correlation_id": correlation_id,
                    "operation": "generate",
                    "user_parameters": parameters,
                },
            )
            report = api_error(ctx, data_dir=self.data_dir)
        elif outcome is not None and outcome.failure is not None and _fallback_withheld(outcome.failure):
            details = report["error"]
            report = {"error": {**details, "actionable_steps": [*details["actionable_steps"], ALLOW_FALLBACK_STEP]}}
        return GenerationFailedError(
            report["error"]["user_message"],
            report=report,
            correlation_id=correlation_id,
            attempts=len(outcome.attempts) if outcome is not None else 0,
        )

    def bad_correlation_id(self, correlation_id: object) -> GenerationFailedError:
        """The refusal of a correlation id that is not 1 to 64 letters, digits, ``_`` or ``-``."""
        error = InvalidParameterError(
            f"`correlation_id` must be 1 to 64 letters, digits, `_` or `-` (got {correlation_id!r:.80})",
            parameter="correlation_id",
            value=correlation_id,
            constraint="^[A-Za-z0-9_-]{1,64}$",
        )
        return self.failure(error, None, None)  # not journaled: there is no valid id to file it under

    def exists(self, correlation_id: str, status: str) -> RequestExistsError:
        """The refusal of a repeated id: the spec's error shape, saying where the existing request's status is."""
        where = f"GET /api/v1/requests/{correlation_id}"
        message = f"request {correlation_id} already exists ({status}), so it was not run again; its status: {where}"
        failure = self.failure(
            InvalidParameterError(
                message, parameter="correlation_id", value=correlation_id, constraint="not used by an earlier request"
            ),
            correlation_id,
            None,
        )
        # Our own words around a well-formed id: nothing to scrub (and scrub would take the route for a path).
        report = {
            "error": {
                **failure.report["error"],
                "message": message,
                "user_message": f"This request was already sent, so it was not run again. Its status is at {where}.",
                "actionable_steps": [f"Read its status at {where}", "Send a new Idempotency-Key to make a new request"],
            }
        }
        return RequestExistsError(
            report["error"]["user_message"], report=report, correlation_id=correlation_id, attempts=0, status=status
        )


def _described(request: GenerationRequest) -> str:
    return f"{request.num_frames} frames at {request.width}×{request.height}"


def _fallback_withheld(failure: ErrorContext) -> bool:
    """Whether another model could have stood in, had the request allowed one (see ``engine.run(allow_fallback)``)."""
    state = failure.system_state
    return (
        state.get("fallback_allowed") is False
        and bool(state.get("alternatives"))
        and failure.failure_type in _FALLBACK_TYPES
    )
