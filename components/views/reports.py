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

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.request import GenerationOutput, GenerationRequest
from components.memory.ladder import MemoryPlan
from recovery.errors import GenerationFailedError, InvalidParameterError, KintsugiError, RequestExistsError
from recovery.messages import api_error, format_bytes
from recovery.outcome import AttemptRecord, Outcome
from recovery.taxonomy import ErrorContext

__all__ = ["EMBEDDED_MODEL_NOTE", "GenerationResult", "Reporter", "ServiceEvent", "ServiceEventKind"]

EMBEDDED_MODEL_NOTE = (
    "Made with the built-in tiny model: its weights are random, so the video is coloured noise. "
    "Choose a real model (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) where a network and a GPU are available."
)


class ServiceEventKind(str, Enum):
    """What a ``ServiceEvent`` tells (a ``str``: ``ServiceEventKind.RESULT == "result"``)."""

    CORRECTION = "correction"  # a parameter corrected at validation
    PLAN = "plan"  # a change made before running (memory plan, a speed-up left off)
    DOWNLOAD = "download"  # model bytes arriving, or waiting for a download already running
    PHASE = "phase"  # load / denoise / decode / export started
    PROGRESS = "progress"  # one denoising step done
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
    """A finished video and the story of how it was made."""

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

    @property
    def recovered(self) -> bool:
        return self.attempts > 1


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
        notes: tuple[str, ...] = (EMBEDDED_MODEL_NOTE,) if output.request.model_id == EMBEDDED_MODEL_ID else ()
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
        )

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
