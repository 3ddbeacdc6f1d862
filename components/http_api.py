"""The REST side of the app: JSON generation with the spec's error shape, videos, and a live event feed (SSE).

Requests and answers are the pydantic models of ``components.views.rest_schema`` (``GenerateBody``,
``GenerateResponse``, ``ReplayedResponse``, ``RequestStatus``, ``ErrorResponse``, ``FeedMessage``), so
``/api/v1/openapi.json`` lists every field. The body is checked before the service sees it, all of it at once: a
key that is not a parameter (``frames``), a value of the wrong type or outside ``LIMITS`` is refused, each one named
in ``error.fields`` and in the message, journaled as failed, nothing run. Wan's shape rules are not refused: the
service still corrects them (width 100 → 96) and the answer reports it in ``corrections``. Only
``application/json`` is read (415 otherwise; a request without a content type is read as JSON), or
``multipart/form-data`` with a ``request`` field (the same JSON object) and an ``image`` file.

Image-to-video: the body's ``image`` (base64, bare or a data URL) or the multipart file is prepared by
``components.generation.images`` (format by content, size, pixels, decompression bombs; cut to the request's
size, reported in ``corrections``) before the service sees the request; a refusal names ``image`` in
``error.fields``, and a model known to be text-to-video refuses any image before it is decoded. A body longer
than the largest image's base64 allows (``KINTSUGI_MAX_UPLOAD_BYTES``) is refused with 413 before it is parsed.
Answers name the image by its file name (its sha256), never by its path.

``POST /api/v1/generate`` takes an optional ``Idempotency-Key`` header: it becomes the request's correlation id,
journaled before work starts, so a client that lost its connection can ask ``GET /api/v1/requests/{key}``; a repeat
of a key never runs again: the same request replays its answer (``repeat_answer``), a different one is refused
(422, ``idempotency_conflict``).

``EventFeed`` listens to the recovery engine and turns each strategy attempt into the spec's WebSocket message
(``{"type": "recovery_attempt", "correlation_id": …, "data": {…}}``); the REST handler adds ``progress`` and
``queue`` messages of its requests in the same envelope. Every subscriber gets them as Server-Sent Events.
``build_router`` returns a FastAPI router the app mounts beside the Gradio UI.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from components.generation.images import (
    ImageLimits,
    attach_image,
    check_image_use,
    decode_base64_image,
    shown_request,
)
from components.generation.request import CORRELATION_ID, GenerationRequest, validate_request
from components.journal import JournalEntry, RequestState
from components.service import GenerationService
from components.views.reports import GenerationResult, ServiceEvent, ServiceEventKind
from components.views.rest_schema import (
    FEED_TYPES,
    ErrorResponse,
    Fallback,
    FeedMessage,
    GenerateBody,
    GenerateResponse,
    NotFoundResponse,
    ProgressData,
    ProgressMessage,
    QueueData,
    QueueMessage,
    ReplayedResponse,
    RequestStatus,
    UsedSettings,
    check_body,
    problems_message,
    shown_value,
)
from recovery import events
from recovery.errors import GenerationFailedError, InvalidParameterError, KintsugiError, RequestExistsError
from recovery.events import RecoveryEvent
from recovery.messages import api_error, format_bytes, guidance_for, scrub
from recovery.taxonomy import EnhancedFailureType, RecoveryStrategy

__all__ = [
    "FALLBACK_HEADER",
    "EventFeed",
    "FeedSubscription",
    "RestQueue",
    "body_limit",
    "build_router",
    "progress_message",
    "recovery_message",
    "repeat_answer",
    "request_status_json",
]

# "<YYYYMMDD-HHMMSS>-<prompt slug>-<correlation id>-<attempt>.mp4" and the older "<correlation id>-<attempt>.mp4":
# letters, digits, `_` and `-` only, so no name can hold a dot or a slash and leave the output folder.
_VIDEO_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}\.mp4$")
_CLIENT_ERRORS = {"invalid_parameters", "unsupported_operation"}
FALLBACK_HEADER = "Kintsugi-Fallback"
_BODY_SLACK = 256 * 1024  # a body's bytes besides its image's base64 (two prompts of 2000 characters fit easily)


def _invalid(problems: list[dict[str, Any]]) -> InvalidParameterError:
    """The one error a body's problems are refused with: its message names them all."""
    first = problems[0]
    return InvalidParameterError(
        problems_message(problems),
        parameter=first["parameter"],
        value=first["value"],
        constraint=first["constraint"],
    )


def _fallback(asked: str | None, used: str | None) -> Fallback | None:
    """Another model stood in when the one used is not the one asked for (the request's, or the default)."""
    return Fallback(from_model=asked, to_model=used) if asked and used and asked != used else None


def _fallback_headers(fallback: Fallback | None) -> dict[str, str]:
    return {FALLBACK_HEADER: f"{fallback.from_model} -> {fallback.to_model}"} if fallback else {}


_CANCEL_WAIT_S = 1.0  # a DELETE waits this long for the request to stop, to answer "cancelled" rather than "cancelling"


def request_status_json(entry: JournalEntry) -> dict[str, Any]:
    """``GET /api/v1/requests/{id}``: status and reason; the video URL when completed, the spec's error when
    failed or cancelled."""
    answer: dict[str, Any] = {
        "correlation_id": entry.id,
        "status": entry.status.value,
        "reason": entry.reason,
        "restarts": entry.restarts,
        "accepted_at": entry.accepted_at,
        "updated_at": entry.updated_at,
    }
    result = dict(entry.result or {})
    if entry.status is RequestState.COMPLETED:
        fallback = _fallback(result.get("fallback_from"), result.get("fallback_to"))
        answer.update(
            video_url=f"/api/v1/videos/{result['video']}",
            attempts=result.get("attempts"),
            degraded=result.get("degraded"),
            changed=result.get("changed"),  # None for a request completed before the journal kept it
            fallback=fallback.model_dump() if fallback else None,
        )
    elif entry.status in (RequestState.FAILED, RequestState.CANCELLED) and "error" in result:
        answer["error"] = result["error"]
    return answer


def repeat_answer(entry: JournalEntry | None, refusal: RequestExistsError) -> JSONResponse:
    """A ``POST /api/v1/generate`` whose ``Idempotency-Key`` is already journaled for the same request; nothing
    runs again. A completed request answers 200 with its status and result (video URL, attempts, changes, request,
    seed, frames hash, fallback), a failed one its error as first answered, one still accepted or running 409
    saying where its status is. Replays carry ``Idempotent-Replayed: true``."""
    replayed = {"Idempotent-Replayed": "true"}
    result = dict(entry.result or {}) if entry is not None else {}
    if entry is not None and entry.status is RequestState.COMPLETED:
        used = result.get("request") or {}
        fallback = _fallback((entry.request or {}).get("model_id"), used.get("model_id"))
        return JSONResponse(
            {
                **request_status_json(entry),
                "changes": result.get("changes", []),
                "request": shown_request(result["request"]) if result.get("request") else None,
                "frames_sha256": result.get("frames_sha256"),
                "seed": used.get("seed"),
                "fallback": fallback.model_dump() if fallback else None,
            },
            headers={**replayed, **_fallback_headers(fallback)},
        )
    if entry is not None and entry.status is RequestState.FAILED and "error" in result:
        return JSONResponse(
            {**result, "correlation_id": entry.id}, status_code=_failure_status(result), headers=replayed
        )
    return JSONResponse({**refusal.report, "correlation_id": refusal.correlation_id}, status_code=409)


def _failure_status(report: Mapping[str, Any]) -> int:
    """422 for what the client can change, 409 for a request someone stopped, 500 for the rest."""
    if report["error"]["type"] == "cancelled":
        return 409
    return 422 if report["error"]["type"] in _CLIENT_ERRORS else 500


def _error_report(service: GenerationService, error: InvalidParameterError) -> dict[str, Any]:
    """An error of the request itself (not journaled), in the spec's shape, the parameter named in ``fields``."""
    data_dir = str(service.settings.data_dir)
    report = api_error(service.engine.categorize(error, {"operation": "generate"}), data_dir=data_dir)
    report["error"]["fields"] = [
        {"parameter": error.parameter, "value": shown_value(error.value, data_dir), "constraint": error.constraint}
    ]
    return report


def _body_error(
    service: GenerationService,
    parameter: str,
    value: Any,
    constraint: str,
    *,
    got: str | None = None,
    status_code: int = 422,
) -> JSONResponse:
    """A request that is not a request at all (not a JSON object, a bad header or query), in the spec's error
    shape, the parameter named with ``got`` (by default the value's repr, shortened); nothing is journaled."""
    got = f"{value!r:.80}" if got is None else got
    error = InvalidParameterError(
        f"`{parameter}` {constraint} (got {got})", parameter=parameter, value=value, constraint=constraint
    )
    return JSONResponse({**_error_report(service, error), "correlation_id": None}, status_code=status_code)


def _conflict(service: GenerationService, key: str) -> JSONResponse:
    """422 ``idempotency_conflict``: the key names an earlier, different request; nothing ran."""
    where = f"GET /api/v1/requests/{key}"
    constraint = "already used for a different request"
    report = _error_report(
        service, InvalidParameterError(constraint, parameter="Idempotency-Key", value=key, constraint=constraint)
    )
    # Our own words around a well-formed key: nothing to scrub (and scrub would take the route for a path).
    report["error"].update(
        type="idempotency_conflict",
        message=f"Idempotency-Key {key} was already used for a different request, so this one was not run "
        f"(the first one's status: {where})",
        user_message="This Idempotency-Key belongs to a different request, so nothing was run. Send a new key "
        "for a new request.",
        actionable_steps=["Send this request with a new Idempotency-Key", f"Read the first request at {where}"],
    )
    return JSONResponse({**report, "correlation_id": None}, status_code=422)


def _same_request(
    service: GenerationService, entry: JournalEntry, sent: dict[str, Any] | None, problems: list[dict[str, Any]]
) -> bool:
    """Whether a repeated key comes with the request it was first used for (``sent``: the body's request fields,
    its image prepared; the same image at the same size is the same file). An accepted request is compared as
    checked (defaults filled in, shapes corrected; a seed left to chance matches the one drawn); one refused at
    validation matches the same refusal."""
    if entry.request is None:
        stored = dict((entry.result or {}).get("error") or {})
        if not problems:
            return False
        if "fields" in stored:
            return bool(stored["fields"] == problems)
        return bool(stored.get("message") == scrub(problems_message(problems), data_dir=str(service.settings.data_dir)))
    if sent is None:
        return False
    try:
        checked, _ = validate_request(GenerationRequest.from_dict({"model_id": service.settings.model, **sent}))
        first = GenerationRequest.from_dict(dict(entry.request))
    except (KintsugiError, TypeError, ValueError):
        return False
    if "seed" in sent and sent["seed"] is None:
        checked = replace(checked, seed=first.seed)
    # consent as the service resolves it (an entry journaled before `allow_fallback` existed holds none)
    consent = service.fallback_allowed
    return replace(checked, allow_fallback=consent(checked)) == replace(first, allow_fallback=consent(first))


# -- the event feed -----------------------------------------------------------------------------------------------
def recovery_message(event: RecoveryEvent) -> dict[str, Any] | None:
    """The spec's notification for a finished strategy attempt; ``None`` for other events."""
    if event.name != events.STRATEGY_FINISHED or not event.data.get("applicable", True):
        return None
    data = event.data
    strategy = data["strategy"]
    return {
        "type": "recovery_attempt",
        "correlation_id": event.correlation_id,
        "data": {
            "success": bool(data["success"]),
            "strategy": strategy,
            "failure_type": data["failure_type"],
            "severity": data["severity"],
            "message": data.get("message", ""),
            "user_message": guidance_for(EnhancedFailureType(data["failure_type"])).user_message,
            "recovery_time": round(float(data["duration_s"]), 3),
            "requires_user_action": strategy == RecoveryStrategy.USER_INTERVENTION.value,
            "timestamp": event.timestamp,
        },
    }


def progress_message(event: ServiceEvent, correlation_id: str) -> dict[str, Any] | None:
    """A ``progress`` message for a service event that moves the generation (a phase started, a step done);
    ``None`` for other events."""
    data = event.data
    if event.kind is ServiceEventKind.PHASE:
        step, total = None, None
    elif event.kind is ServiceEventKind.PROGRESS:
        step, total = data.get("step"), data.get("total")
    else:
        return None
    return ProgressMessage(
        correlation_id=correlation_id,
        data=ProgressData(
            phase=str(data.get("phase", "denoise")),
            step=step,
            total=total,
            eta_s=data.get("eta_s"),
            attempt=data.get("attempt"),
        ),
    ).model_dump()


class EventFeed:
    """A listener that fans the feed's messages out to subscribers on their event loops; it keeps the latest
    ``recovery_attempt`` messages for a replay (progress and queue messages are live only)."""

    def __init__(self, keep: int = 200) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = set()
        self._lock = threading.Lock()

    def __call__(self, event: RecoveryEvent) -> None:
        message = recovery_message(event)
        if message is not None:
            self.publish(message)

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` (a ``FeedMessage`` as plain data) to every subscriber; from any thread."""
        with self._lock:
            if message["type"] == "recovery_attempt":
                self.recent.append(message)
            subscribers = list(self._subscribers)
        for loop, inbox in subscribers:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, message)
            except RuntimeError:  # that subscriber's loop has closed; its stream is ending
                pass

    def subscribe(self, *, replay: bool = False) -> FeedSubscription:
        """A subscription from now on (after the recent recovery attempts, with ``replay``): nothing published
        after this call is missed. Close it when done."""
        subscription = FeedSubscription(self, asyncio.get_running_loop())
        with self._lock:
            backlog = list(self.recent) if replay else []
            self._subscribers.add(subscription.entry)
        for message in backlog:
            subscription.entry[1].put_nowait(message)
        return subscription

    def unsubscribe(self, subscription: FeedSubscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription.entry)


class FeedSubscription:
    """One subscriber's messages, in order, as an async iterator (on the event loop that subscribed)."""

    def __init__(self, feed: EventFeed, loop: asyncio.AbstractEventLoop) -> None:
        self.feed = feed
        self.entry: tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]] = (loop, asyncio.Queue())

    def __aiter__(self) -> FeedSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self.entry[1].get()

    def close(self) -> None:
        self.feed.unsubscribe(self)


class RestQueue:
    """The REST requests in flight, in the order they arrived. The worker runs one job at a time, so a request's
    place in line is the REST requests ahead of it; each change is published as a ``queue`` message."""

    def __init__(self, publish: Callable[[dict[str, Any]], None]) -> None:
        self._publish = publish
        self._order: list[str] = []
        self._lock = threading.Lock()

    def join(self, correlation_id: str) -> None:
        with self._lock:
            self._order.append(correlation_id)
            ahead = len(self._order) - 1
        self._publish(_queue_message(correlation_id, ahead))

    def leave(self, correlation_id: str) -> None:
        with self._lock:
            if correlation_id not in self._order:
                return
            index = self._order.index(correlation_id)
            self._order.pop(index)
            moved = list(enumerate(self._order))[index:]
        for ahead, waiting in moved:
            self._publish(_queue_message(waiting, ahead))


def _queue_message(correlation_id: str, ahead: int) -> dict[str, Any]:
    return QueueMessage(correlation_id=correlation_id, data=QueueData(position=ahead + 1, ahead=ahead)).model_dump()


def _run_feeding(
    service: GenerationService,
    feed: EventFeed,
    request: Mapping[str, Any],
    correlation_id: str,
    corrections: list[str],
) -> GenerationResult:
    """Run a request to its result, its progress sent to the feed (on the threadpool)."""
    result: GenerationResult | None = None
    for event in service.generate(request, correlation_id=correlation_id, corrections=corrections):
        message = progress_message(event, correlation_id)
        if message is not None:
            feed.publish(message)
        elif event.kind is ServiceEventKind.RESULT:
            result = event.data["result"]
    if result is None:
        raise KintsugiError("generation ended without a result")
    return result


def _generated(result: GenerationResult, asked_model: str) -> JSONResponse:
    """The answer to a request that made a video, with the header naming a stand-in model."""
    fallback = _fallback(asked_model, result.request.model_id)
    seed = result.request.seed
    assert seed is not None  # validate_request draws a missing seed
    answer = GenerateResponse(
        video_url=f"/api/v1/videos/{result.video_path.rsplit('/', 1)[-1]}",
        correlation_id=result.correlation_id,
        attempts=result.attempts,
        degraded=result.degraded,
        corrections=list(result.corrections),
        changes=list(result.changes),
        notes=list(result.notes),
        request=UsedSettings(**shown_request(result.request.to_dict())),
        seed=seed,
        timings=dict(result.output.timings),
        frames_sha256=result.output.frames_sha256,
        fallback=fallback,
        changed=result.changed,
    )
    return JSONResponse(answer.model_dump(mode="json"), headers=_fallback_headers(fallback))


class _EventStream(JSONResponse):
    """Only names the event feed's media type and item schema for the OpenAPI document; the route answers with
    a ``StreamingResponse``."""

    media_type = "text/event-stream"


_FLAGS = {"true": True, "1": True, "false": False, "0": False}


def body_limit(service: GenerationService) -> int:
    """The most bytes a ``POST /api/v1/generate`` body may have: the largest image's base64 and the rest."""
    return 4 * -(-service.settings.max_upload_bytes // 3) + _BODY_SLACK


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` once it is past ``limit`` bytes (by its Content-Length, else as it streams in)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _with_image(
    service: GenerationService, sent: dict[str, Any], image: str | bytes
) -> tuple[dict[str, Any], list[str]]:
    """The body's request fields with its image (base64 text, or an uploaded file's bytes) prepared (a path only
    the server sees), and the corrections preparing it made. A model known to be text-to-video refuses it before
    it is decoded."""
    request = GenerationRequest.from_dict({"model_id": service.settings.model, **sent})
    check_image_use(request.model_id, True)
    limit = service.settings.max_upload_bytes
    data = decode_base64_image(image, max_bytes=limit) if isinstance(image, str) else image
    attached, corrections = attach_image(
        request, data, service.settings.uploads_dir, limits=ImageLimits(max_bytes=limit)
    )
    return {**sent, "image": attached.image}, corrections


_FORM_SHAPE = "must be multipart/form-data with a `request` field (the JSON object) and an optional `image` file"


async def _multipart(
    service: GenerationService, request: Request, data: bytes
) -> tuple[bytes, bytes | None] | JSONResponse:
    """A multipart body's ``request`` field (the JSON object, as text) and its ``image`` file's bytes; or the
    refusal, naming the part, of a body of another shape (nothing journaled)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=2, max_fields=4)
    except (MultiPartException, HTTPException):
        return _body_error(service, "body", None, _FORM_SHAPE, got="a body of another shape")
    try:
        unknown = sorted(set(form.keys()) - {"request", "image"})
        if unknown:
            return _body_error(service, unknown[0], None, "is not a part (send `request` and `image`)", got="a part")
        fields, image = form.get("request"), form.get("image")
        if not isinstance(fields, str):
            got = "a file" if fields is not None else "no `request` field"
            return _body_error(service, "request", None, "must be a field holding the request as JSON", got=got)
        if isinstance(image, str):
            constraint = "must be a file part (or base64 in the request's `image`)"
            return _body_error(service, "image", None, constraint, got="a text field")
        return fields.encode(), (await image.read() if image is not None else None)
    finally:
        await form.close()


def _problem(error: InvalidParameterError, data_dir: str) -> dict[str, Any]:
    return {
        "parameter": error.parameter or "body",
        "value": shown_value(error.value, data_dir),
        "constraint": error.constraint or str(error),
    }


def _openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request"],
    "properties": {
        "request": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "the request as a JSON object (`GenerateBody`, without `image`)",
        },
        "image": {
            "type": "string",
            "format": "binary",
            "description": "the start image of an image-to-video model: a PNG, JPEG or WebP file, checked as "
            "`GenerateBody.image` is",
        },
    },
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorResponse,
        "description": "Invalid parameters (every one in `error.fields`), a body that "
        "is not a JSON object, a bad Idempotency-Key, or a key used for a different request",
    },
    500: {"model": ErrorResponse, "description": "Recovery could not produce a video"},
}


def build_router(get_service: Callable[[], GenerationService], feed: EventFeed) -> APIRouter:
    """``POST /api/v1/generate``, ``GET``/``DELETE /api/v1/requests/{id}``, ``GET /api/v1/videos/{name}``,
    ``GET /api/v1/events`` (SSE)."""
    router = APIRouter(prefix="/api/v1")
    line = RestQueue(feed.publish)

    @router.post(
        "/generate",
        response_model=GenerateResponse | ReplayedResponse,
        responses={
            200: {
                "description": "The video (`GenerateResponse`), or for a repeated Idempotency-Key the first "
                "answer (`ReplayedResponse`, header `Idempotent-Replayed: true`). Header `Kintsugi-Fallback: "
                "<from> -> <to>` when another model stood in",
                "headers": {
                    FALLBACK_HEADER: {
                        "description": "`<asked model> -> <model used>` when another model stood in",
                        "schema": {"type": "string"},
                    },
                    "Idempotent-Replayed": {
                        "description": "`true` on the replayed answer of a repeated Idempotency-Key",
                        "schema": {"type": "string"},
                    },
                },
            },
            409: {"model": ErrorResponse, "description": "The Idempotency-Key's request is still running"},
            413: {
                "model": ErrorResponse,
                "description": "A body larger than the largest image's base64 (KINTSUGI_MAX_UPLOAD_BYTES) allows",
            },
            415: {
                "model": ErrorResponse,
                "description": "A content type other than application/json or multipart/form-data",
            },
            **_ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _openapi_schema(GenerateBody)},
                    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                },
            }
        },
    )
    async def generate(
        request: Request,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description="1 to 64 of A-Z a-z 0-9 _ -: the request's correlation id; a repeat never runs "
                "again (the same request answers as it ended, or 409 while unfinished; a different one 422)",
            ),
        ] = None,
    ) -> JSONResponse:
        """Generate a video from a JSON object (`GenerateBody`); a failure answers with the spec's error shape and
        the request's ``correlation_id`` (for ``GET /api/v1/requests/{id}``)."""
        service = get_service()
        content_type = request.headers.get("content-type")
        media = (content_type or "application/json").split(";", 1)[0].strip().lower()
        if media not in ("application/json", "multipart/form-data"):
            constraint = "must be application/json or multipart/form-data"
            return _body_error(service, "Content-Type", content_type, constraint, status_code=415)
        if idempotency_key is not None and not CORRELATION_ID.fullmatch(idempotency_key):
            return _body_error(
                service, "Idempotency-Key", idempotency_key, "must be 1 to 64 letters, digits, `_` or `-`"
            )
        limit = body_limit(service)
        text = await _read_body(request, limit)
        if text is None:
            return _body_error(
                service, "body", None, f"must be at most {format_bytes(limit)}", got="more", status_code=413
            )
        upload: bytes | None = None
        if media == "multipart/form-data":
            parts = await _multipart(service, request, text)
            if isinstance(parts, JSONResponse):
                return parts
            text, upload = parts
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, numbers past int's digit limit, deep nesting
            return _body_error(service, "body", None, "must be a JSON object", got="text that is not JSON")
        if not isinstance(raw, dict):
            return _body_error(service, "body", raw, "must be a JSON object", got=f"a JSON {type(raw).__name__}")
        data_dir = str(service.settings.data_dir)
        body, problems = check_body(raw, data_dir=data_dir)
        sent = body.request_fields() if body is not None else None
        image_corrections: list[str] = []
        image: str | bytes | None = body.image if body is not None else None
        if upload is not None:
            if image is not None:
                constraint = "must be sent once: as a file part or as base64 in the request, not both"
                body, sent, problems = None, None, [{"parameter": "image", "value": None, "constraint": constraint}]
            image = upload
        if body is not None and sent is not None and image is not None:
            try:
                sent, image_corrections = await run_in_threadpool(_with_image, service, sent, image)
            except InvalidParameterError as exc:
                body, sent, problems = None, None, [_problem(exc, data_dir)]
        if idempotency_key is not None and (entry := service.request_status(idempotency_key)) is not None:
            return _repeated(service, entry, sent, problems)
        try:
            if body is None or sent is None:
                failure = await run_in_threadpool(service.refuse, _invalid(problems), idempotency_key, fields=problems)
                return JSONResponse({**failure.report, "correlation_id": failure.correlation_id}, status_code=422)
            correlation_id = idempotency_key or service.keeper.claim(None)
            line.join(correlation_id)
            try:
                result = await run_in_threadpool(_run_feeding, service, feed, sent, correlation_id, image_corrections)
            finally:
                line.leave(correlation_id)
        except RequestExistsError as exc:  # the key was journaled meanwhile, by a request sent at the same time
            entry = service.request_status(exc.correlation_id or "")
            return _repeated(service, entry, sent, problems) if entry is not None else repeat_answer(None, exc)
        except GenerationFailedError as exc:
            return JSONResponse(
                {**exc.report, "correlation_id": exc.correlation_id}, status_code=_failure_status(exc.report)
            )
        return _generated(result, body.model_id if "model_id" in body.model_fields_set else service.settings.model)

    @router.get(
        "/requests/{correlation_id}", response_model=RequestStatus, responses={404: {"model": NotFoundResponse}}
    )
    def request_status(correlation_id: str) -> JSONResponse:
        """Where a request stands: accepted, running, completed (with its video URL) or failed (with the error)."""
        entry = get_service().request_status(correlation_id) if CORRELATION_ID.fullmatch(correlation_id) else None
        if entry is None:
            return JSONResponse({"error": {"type": "not_found", "message": "no such request"}}, status_code=404)
        return JSONResponse(request_status_json(entry))

    @router.delete("/requests/{correlation_id}")
    def cancel_request(correlation_id: str) -> JSONResponse:
        """Stop a request: one still waiting never starts, one running stops at its next denoising step or decoder
        chunk. 200 ``cancelled`` once it has ended, 202 ``cancelling`` while it stops; 404 for an unknown request,
        409 for one that already ended (completed, failed or cancelled)."""
        service = get_service()
        entry = service.request_status(correlation_id) if CORRELATION_ID.fullmatch(correlation_id) else None
        if entry is None:
            return JSONResponse({"error": {"type": "not_found", "message": "no such request"}}, status_code=404)
        if not entry.finished and service.cancel(correlation_id):
            service.wait_until_ended(correlation_id, _CANCEL_WAIT_S)
            entry = service.request_status(correlation_id) or entry
            if not entry.finished:
                return JSONResponse({"correlation_id": correlation_id, "status": "cancelling"}, status_code=202)
            if entry.status is RequestState.CANCELLED:
                return JSONResponse({"correlation_id": correlation_id, "status": "cancelled"})
        entry = service.request_status(correlation_id) or entry
        return JSONResponse(
            {
                "error": {"type": "already_finished", "message": f"the request already ended ({entry.status.value})"},
                "correlation_id": correlation_id,
                "status": entry.status.value,
            },
            status_code=409,
        )

    @router.get(
        "/videos/{name}",
        response_class=FileResponse,
        responses={200: {"content": {"video/mp4": {}}}, 404: {"model": NotFoundResponse}},
    )
    def video(name: str) -> Any:
        """A generated video, by file name only (letters, digits, `_`, `-`, then `.mp4`: no paths)."""
        path = get_service().settings.outputs_dir / name
        if not _VIDEO_NAME.fullmatch(name) or not path.is_file():
            return JSONResponse({"error": {"type": "not_found", "message": "no such video"}}, status_code=404)
        return FileResponse(path, media_type="video/mp4")

    @router.get(
        "/events",
        response_class=_EventStream,
        response_model=FeedMessage,
        responses={
            200: {"description": "Per message an `event: <type>` line and a `data:` line of JSON (a `FeedMessage`)"},
            422: {
                "description": "A query parameter out of its values",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
            },
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "replay",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "boolean", "default": False},
                    "description": "first the recent recovery attempts",
                },
                {
                    "name": "types",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "example": "progress,queue"},
                    "description": f"comma-separated message types to receive, of {', '.join(FEED_TYPES)} "
                    "(default: all)",
                },
            ]
        },
    )
    async def feed_events(request: Request) -> Response:
        """Server-Sent Events, each ``event: <type>`` then ``data: <JSON>``, as they happen:

        - ``recovery_attempt`` (the spec's message): a strategy of the recovery engine finished, any request
        - ``progress``: a REST request's phase started (``step`` null) or a step of it is done
          (``phase``, ``step``, ``total``, ``eta_s``, ``attempt``)
        - ``queue``: a REST request's place in line (``position``, ``ahead``: the REST requests accepted before
          it and still in flight), when it arrives and each time one ahead of it ends
        """
        service = get_service()
        replay_text = request.query_params.get("replay", "false").strip().lower()
        if replay_text not in _FLAGS:
            return _body_error(service, "replay", replay_text, "must be true or false")
        wanted = set(FEED_TYPES)
        if "types" in request.query_params:
            wanted = {name.strip() for name in request.query_params["types"].split(",") if name.strip()}
            if not wanted or not wanted <= set(FEED_TYPES):
                return _body_error(
                    service, "types", request.query_params["types"], f"must name some of {', '.join(FEED_TYPES)}"
                )
        subscription = feed.subscribe(replay=_FLAGS[replay_text])  # before the answer starts: nothing is missed

        async def body() -> AsyncIterator[str]:
            try:
                yield ": kintsugi event feed\n\n"
                async for message in subscription:
                    if await request.is_disconnected():
                        return
                    if message["type"] in wanted:
                        yield f"event: {message['type']}\ndata: {json.dumps(message)}\n\n"
            finally:
                subscription.close()

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router


def _repeated(
    service: GenerationService, entry: JournalEntry, sent: dict[str, Any] | None, problems: list[dict[str, Any]]
) -> JSONResponse:
    """A key already journaled: the first answer for the same request, a conflict for a different one."""
    if not _same_request(service, entry, sent, problems):
        return _conflict(service, entry.id)
    return repeat_answer(entry, service.keeper.exists(entry.id))
