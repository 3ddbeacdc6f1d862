"""The REST API's contract as pydantic models: the request body (``GenerateBody``), the answers
(``GenerateResponse``, ``ReplayedResponse``, ``RequestStatus``, ``ErrorResponse``) and the event feed's messages
(``FeedMessage``), so that ``/api/v1/openapi.json`` lists every field.

``GenerateBody`` refuses what is not a request, all of it at once: a key that is not a parameter, a value of the
wrong type, a value out of ``LIMITS`` (``check_body`` lists each problem, in ``validate_request``'s words). It does
not refuse Wan's shape rules (frames ``4k+1``, sides divisible by 16): ``validate_request`` corrects those and
reports it. ``components.http_api`` serves them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import fields as dataclass_fields
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.images import DEFAULT_MAX_IMAGE_BYTES, ImageLimits
from components.generation.request import LIMITS, MODEL_ID_PATTERN, GenerationRequest
from recovery.messages import format_bytes, scrub

__all__ = [
    "FEED_TYPES",
    "ErrorBody",
    "ErrorResponse",
    "Fallback",
    "FeedMessage",
    "FieldProblem",
    "GenerateBody",
    "GenerateResponse",
    "NotFoundResponse",
    "ProgressData",
    "ProgressMessage",
    "QueueData",
    "QueueMessage",
    "RecoveryAttemptData",
    "RecoveryAttemptMessage",
    "ReplayedResponse",
    "RequestStatus",
    "UsedSettings",
    "check_body",
    "problems_message",
    "shown_value",
]

_DEFAULT = GenerationRequest(prompt="")
_REQUEST_FIELDS = frozenset(f.name for f in dataclass_fields(GenerationRequest))
_SHOWN_CHARS = 80  # a sent value longer than this is described, not echoed
_IMAGE = ImageLimits()


# -- the request body ---------------------------------------------------------------------------------------------
def _refuse(kind: str, constraint: str) -> PydanticCustomError:
    return PydanticCustomError(kind, constraint)


def _whole_number(low: int, high: int, *, optional: bool = False) -> BeforeValidator:
    """A whole number within bounds (``17.0`` is 17; ``true`` and ``"17"`` are not numbers), as
    ``validate_request`` takes it; ``None`` too when ``optional``."""

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and (not math.isfinite(value) or value != int(value)))
        ):
            raise _refuse("whole_number", "must be a whole number")
        if not low <= value <= high:
            raise _refuse("out_of_range", f"must be between {low} and {high}")
        return int(value)

    return BeforeValidator(check)


def _finite_number(low: float, high: float) -> BeforeValidator:
    def check(value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            raise _refuse("finite_number", "must be a finite number")
        if not low <= value <= high:
            raise _refuse("out_of_range", f"must be between {low} and {high}")
        return float(value)

    return BeforeValidator(check)


def _text(limit: int, *, required: bool) -> BeforeValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise _refuse("text", "must be text")
        if "\x00" in value:
            raise _refuse("nul_character", "must not contain NUL characters")
        if required and not value.strip():
            raise _refuse("empty", "must not be empty")
        if len(value) > limit:
            raise _refuse("too_long", f"must be at most {limit} characters")
        return value

    return BeforeValidator(check)


def _model_id(value: Any) -> Any:
    if not isinstance(value, str) or not MODEL_ID_PATTERN.fullmatch(value) or ".." in value:
        raise _refuse("model_id", "must look like owner/name (letters, digits, '-', '_', '.')")
    return value


def _image_text(value: Any) -> Any:
    """Base64 text or null here; what it decodes to is checked by ``components.generation.images``."""
    if value is not None and not isinstance(value, str):
        raise _refuse("image_text", "must be base64 text or a data URL (data:image/png;base64,...)")
    return value


def _flag(value: Any) -> Any:
    if value is not None and not isinstance(value, bool):
        raise _refuse("flag", "must be true, false or null")
    return value


_SIDE = f"{LIMITS.min_side} to {LIMITS.max_side} pixels; Wan needs a multiple of {LIMITS.side_multiple}: another "
_CORRECTED = "value is corrected to the nearest one and reported in `corrections`"


class GenerateBody(BaseModel):
    """``POST /api/v1/generate``: one text-to-video request, or image-to-video with ``image``. Every field but
    ``prompt`` is optional; a key that is not listed here is refused, named."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[
        str,
        Field(min_length=1, max_length=LIMITS.max_prompt_chars, description="What the video shows (not blank, no NUL)"),
        _text(LIMITS.max_prompt_chars, required=True),
    ]
    negative_prompt: Annotated[
        str,
        Field(max_length=LIMITS.max_prompt_chars, description="What to keep out of the video"),
        _text(LIMITS.max_prompt_chars, required=False),
    ] = _DEFAULT.negative_prompt
    width: Annotated[
        int,
        Field(ge=LIMITS.min_side, le=LIMITS.max_side, description="Frame width, " + _SIDE + _CORRECTED),
        _whole_number(LIMITS.min_side, LIMITS.max_side),
    ] = _DEFAULT.width
    height: Annotated[
        int,
        Field(ge=LIMITS.min_side, le=LIMITS.max_side, description="Frame height, " + _SIDE + _CORRECTED),
        _whole_number(LIMITS.min_side, LIMITS.max_side),
    ] = _DEFAULT.height
    num_frames: Annotated[
        int,
        Field(
            ge=LIMITS.min_frames,
            le=LIMITS.max_frames,
            description=f"Frames, {LIMITS.min_frames} to {LIMITS.max_frames}; Wan needs "
            f"{LIMITS.frame_multiple}k+1: another " + _CORRECTED,
        ),
        _whole_number(LIMITS.min_frames, LIMITS.max_frames),
    ] = _DEFAULT.num_frames
    steps: Annotated[
        int,
        Field(ge=LIMITS.min_steps, le=LIMITS.max_steps, description="Denoising steps"),
        _whole_number(LIMITS.min_steps, LIMITS.max_steps),
    ] = _DEFAULT.steps
    guidance_scale: Annotated[
        float,
        Field(ge=0.0, le=LIMITS.max_guidance, description="Classifier-free guidance scale"),
        _finite_number(0.0, LIMITS.max_guidance),
    ] = _DEFAULT.guidance_scale
    seed: Annotated[
        Annotated[int, Field(ge=0, le=LIMITS.max_seed)] | None,
        Field(description="Noise seed; null draws one at random (reported in `corrections`, returned in `seed`)"),
        _whole_number(0, LIMITS.max_seed, optional=True),
    ] = _DEFAULT.seed
    fps: Annotated[
        int,
        Field(ge=LIMITS.min_fps, le=LIMITS.max_fps, description="Frames per second of the mp4"),
        _whole_number(LIMITS.min_fps, LIMITS.max_fps),
    ] = _DEFAULT.fps
    model_id: Annotated[
        str,
        Field(
            pattern=MODEL_ID_PATTERN.pattern,
            description="Hub id (owner/name); when left out, the server's model (KINTSUGI_MODEL, the built-in "
            f"tiny model {EMBEDDED_MODEL_ID} unless set)",
        ),
        BeforeValidator(_model_id),
    ] = EMBEDDED_MODEL_ID
    allow_fallback: Annotated[
        bool | None,
        Field(
            description="Whether another model may stand in when this one cannot run; null: the server's "
            "default. A stand-in is reported in `fallback` and the Kintsugi-Fallback header"
        ),
        BeforeValidator(_flag),
    ] = None
    image: Annotated[
        str | None,
        Field(
            description="Image-to-video: the start image as base64, bare or as a data URL "
            "(`data:image/png;base64,...`). PNG, JPEG or WebP (by content), at most KINTSUGI_MAX_UPLOAD_BYTES "
            f"({format_bytes(DEFAULT_MAX_IMAGE_BYTES)} unless set) once decoded, {_IMAGE.max_side} pixels a side "
            f"and {_IMAGE.max_pixels / 1e6:g} megapixels; turned upright (EXIF), "
            "centre-cropped and resized to width×height, reported in `corrections`. Refused for a text-to-video "
            "model; required by an image-to-video one",
            json_schema_extra={"contentEncoding": "base64"},
        ),
        BeforeValidator(_image_text),
    ] = None

    def request_fields(self) -> dict[str, Any]:
        """The fields the client set, for ``GenerationRequest``; an unset ``model_id`` is left to the service's
        default, an unset seed is ``GenerationRequest``'s. ``image`` is left out: the base64 is not a prepared
        image (``components.generation.images.attach_image`` makes one of it)."""
        return {
            key: value
            for key, value in self.model_dump(exclude_unset=True).items()
            if key in _REQUEST_FIELDS and key != "image"
        }


def _shown(value: Any) -> Any:
    """A sent value as an error may echo it: plain scalars as they are, long or odd ones described."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 53 else f"<a {value.bit_length()}-bit number>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON answers cannot carry NaN or infinity
    if isinstance(value, str):
        if "\x00" in value:
            return "<text with a NUL character>"
        return value if len(value) <= _SHOWN_CHARS else f"<{len(value)} characters>"
    return f"a JSON {'array' if isinstance(value, list) else 'object' if isinstance(value, dict) else 'value'}"


def _name(key: str) -> str:
    return key if len(key) <= 40 else key[:40] + "…"


def _problems(error: ValidationError, data_dir: str) -> list[dict[str, Any]]:
    """Every invalid field of a body, once each: ``{"parameter", "value", "constraint"}``, scrubbed."""
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    names = sorted(GenerateBody.model_fields)
    for item in error.errors():
        parameter = str(item["loc"][0]) if item["loc"] else "body"
        if parameter in seen:
            continue
        seen.add(parameter)
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(parameter, names, n=1, cutoff=0.6)
            constraint = "is not a parameter" + (f" (did you mean `{close[0]}`?)" if close else "")
        elif item["type"] == "missing":
            constraint, value = "is required", None
        else:
            constraint = item["msg"]
        problems.append(
            {
                "parameter": scrub(_name(parameter), data_dir=data_dir),
                "value": shown_value(value, data_dir),
                "constraint": constraint,
            }
        )
    return problems


def shown_value(value: Any, data_dir: str) -> Any:
    """A sent value as an error may echo it: plain scalars as they are, long or odd ones described, paths and
    tokens taken out (a blank text stays as it was sent)."""
    shown = _shown(value)
    if not isinstance(shown, str):
        return shown
    cleaned = scrub(shown, data_dir=data_dir)
    return shown if cleaned == shown.strip() else cleaned


def _problem_text(problem: Mapping[str, Any]) -> str:
    text = f"`{problem['parameter']}` {problem['constraint']}"
    if problem["constraint"] == "is required" or problem["constraint"].startswith("is not a parameter"):
        return text
    return f"{text} (got {problem['value']!r})"


def problems_message(problems: list[dict[str, Any]]) -> str:
    texts = [_problem_text(problem) for problem in problems]
    return texts[0] if len(texts) == 1 else f"{len(texts)} parameters are invalid: " + "; ".join(texts)


def check_body(body: Mapping[str, Any], *, data_dir: str = "") -> tuple[GenerateBody | None, list[dict[str, Any]]]:
    """The body as a ``GenerateBody``, or ``None`` and every problem with it."""
    try:
        return GenerateBody.model_validate(dict(body)), []
    except ValidationError as exc:
        return None, _problems(exc, data_dir)


# -- answers ------------------------------------------------------------------------------------------------------
class FieldProblem(BaseModel):
    """One refused parameter: its name, what was sent (long or odd values described) and the rule."""

    parameter: str
    value: Any = None
    constraint: str


class ErrorBody(BaseModel):
    """The spec's API error; ``fields`` lists every parameter refused, when parameters were."""

    type: str = Field(description="the failure type (`invalid_parameters`, `idempotency_conflict`, ...)")
    severity: str
    message: str
    user_message: str
    recovery_attempted: bool
    recovery_success: bool
    actionable_steps: list[str]
    estimated_resolution_time: str | None
    fields: list[FieldProblem] | None = None


class ErrorResponse(BaseModel):
    """A request that ended without a video; ``correlation_id`` is its journal id (null when nothing was
    journaled: a body that is not a JSON object, a bad header, a key used for another request)."""

    error: ErrorBody
    correlation_id: str | None


class NotFoundBody(BaseModel):
    type: Literal["not_found"]
    message: str


class NotFoundResponse(BaseModel):
    error: NotFoundBody


class UsedSettings(BaseModel):
    """The settings a video was made with (after corrections, a lowered setting or a stand-in model), the seed
    actually used included."""

    model_config = ConfigDict(extra="allow")

    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    steps: int
    guidance_scale: float
    seed: int
    fps: int
    model_id: str
    image: str | None = Field(
        default=None, description="image-to-video: the prepared start image's file name (its sha256), not a path"
    )


class Fallback(BaseModel):
    """Another model stood in for the one asked for."""

    from_model: str
    to_model: str


class GenerateResponse(BaseModel):
    """A video, and how it was made."""

    video_url: str
    correlation_id: str
    attempts: int
    degraded: bool = Field(description="a lowered setting or preview: the video is not what was asked for")
    corrections: list[str] = Field(description="parameters corrected to what Wan can use (one line each)")
    changes: list[str] = Field(description="what was changed to make it run (memory plan, recovery)")
    notes: list[str]
    request: UsedSettings
    seed: int = Field(description="the seed used: send it back to get the same video")
    timings: dict[str, float]
    frames_sha256: str
    fallback: Fallback | None = Field(description="set when another model stood in for the one asked for")
    changed: bool = Field(
        description="not the video asked for: another model made it, or frames or resolution were lowered (the "
        "lines in `changes` and `notes` say what)"
    )


class RequestStatus(BaseModel):
    """Where a request stands; ``video_url``, ``attempts`` and ``degraded`` come with ``completed``, ``error`` with
    ``failed`` and ``cancelled`` (someone stopped it: not a failure)."""

    correlation_id: str
    status: Literal["accepted", "running", "completed", "failed", "cancelled"]
    reason: str | None
    restarts: int
    accepted_at: float
    updated_at: float
    video_url: str | None = None
    attempts: int | None = None
    degraded: bool | None = None
    changed: bool | None = Field(
        default=None, description="completed: not the video asked for (another model, or lowered frames/resolution)"
    )
    fallback: Fallback | None = Field(default=None, description="completed: the model that stood in for the one asked")
    error: ErrorBody | None = None


class ReplayedResponse(RequestStatus):
    """The answer to a repeated ``Idempotency-Key`` with the same request, completed (``Idempotent-Replayed``)."""

    changes: list[str]
    request: UsedSettings | None
    frames_sha256: str | None
    seed: int | None
    fallback: Fallback | None


# -- the event feed's messages --------------------------------------------------------------------------------------
class RecoveryAttemptData(BaseModel):
    success: bool
    strategy: str
    failure_type: str
    severity: str
    message: str
    user_message: str
    recovery_time: float = Field(description="seconds the strategy took")
    requires_user_action: bool
    timestamp: float


class RecoveryAttemptMessage(BaseModel):
    """The spec's notification: one strategy attempt of the recovery engine finished (any request)."""

    type: Literal["recovery_attempt"] = "recovery_attempt"
    correlation_id: str | None
    data: RecoveryAttemptData


class ProgressData(BaseModel):
    phase: str = Field(description="load, denoise, decode or export")
    step: int | None = Field(description="steps done in the phase; null when the phase starts")
    total: int | None = Field(description="steps of the phase; null when the phase starts")
    eta_s: float | None = Field(default=None, description="seconds the phase still needs, when known")
    attempt: int | None = Field(default=None, description="the recovery attempt this run is (1 first)")


class ProgressMessage(BaseModel):
    """A REST request's generation moved: a phase started, or one more step of it is done."""

    type: Literal["progress"] = "progress"
    correlation_id: str
    data: ProgressData


class QueueData(BaseModel):
    position: int = Field(description="1 is the next (or running) REST request")
    ahead: int = Field(description="REST requests accepted before this one and still in flight")


class QueueMessage(BaseModel):
    """Where a REST request stands in line: sent when it arrives and each time one ahead of it ends. Only requests
    over REST are counted (the page, notebooks and re-runs after a restart share the worker uncounted)."""

    type: Literal["queue"] = "queue"
    correlation_id: str
    data: QueueData


FeedMessage = Annotated[RecoveryAttemptMessage | ProgressMessage | QueueMessage, Field(discriminator="type")]
FEED_TYPES = ("recovery_attempt", "progress", "queue")
