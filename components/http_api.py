"""The REST side of the app: JSON generation with the spec's error shape, videos, and a live event feed (SSE).

``EventFeed`` listens to the recovery engine and turns each strategy attempt into the spec's WebSocket message
(``{"type": "recovery_attempt", "correlation_id": …, "data": {…}}``), delivered to every subscriber as Server-Sent
Events. ``build_router`` returns a FastAPI router the app mounts beside the Gradio UI.

``POST /api/v1/generate`` takes an optional ``Idempotency-Key`` header: it becomes the request's correlation id,
journaled before work starts, so a client that lost its connection can ask ``GET /api/v1/requests/{key}``; a repeat
of a key never runs again (``repeat_answer``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from components.generation.request import CORRELATION_ID
from components.journal import JournalEntry, RequestState
from components.service import GenerationService
from recovery import events
from recovery.errors import GenerationFailedError, InvalidParameterError, RequestExistsError
from recovery.events import RecoveryEvent
from recovery.messages import api_error, guidance_for
from recovery.taxonomy import EnhancedFailureType, RecoveryStrategy

__all__ = ["EventFeed", "build_router", "recovery_message", "repeat_answer", "request_status_json"]

# "<correlation id>-<attempt>.mp4": a 64-character Idempotency-Key still names a video that is served.
_VIDEO_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}(?:-[0-9]{1,4})?\.mp4$")
_CLIENT_ERRORS = {"invalid_parameters", "unsupported_operation"}
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
        answer.update(
            video_url=f"/api/v1/videos/{result['video']}",
            attempts=result.get("attempts"),
            degraded=result.get("degraded"),
        )
    elif entry.status in (RequestState.FAILED, RequestState.CANCELLED) and "error" in result:
        answer["error"] = result["error"]
    return answer


def repeat_answer(entry: JournalEntry | None, refusal: RequestExistsError) -> JSONResponse:
    """A ``POST /api/v1/generate`` whose ``Idempotency-Key`` is already journaled; nothing runs again. A completed
    request answers 200 with its status and result (video URL, attempts, changes, request, frames hash), a failed
    one its error as first answered, one still accepted or running 409 saying where its status is. Replays carry
    ``Idempotent-Replayed: true``."""
    replayed = {"Idempotent-Replayed": "true"}
    result = dict(entry.result or {}) if entry is not None else {}
    if entry is not None and entry.status is RequestState.COMPLETED:
        return JSONResponse(
            {
                **request_status_json(entry),
                "changes": result.get("changes", []),
                "request": result.get("request"),
                "frames_sha256": result.get("frames_sha256"),
            },
            headers=replayed,
        )
    if entry is not None and entry.status is RequestState.FAILED and "error" in result:
        return JSONResponse(
            {**result, "correlation_id": entry.id}, status_code=_failure_status(result), headers=replayed
        )
    return JSONResponse({**refusal.report, "correlation_id": refusal.correlation_id}, status_code=409)


def _failure_status(report: dict[str, Any]) -> int:
    """422 for what the client can change, 409 for a request someone stopped, 500 for the rest."""
    if report["error"]["type"] == "cancelled":
        return 409
    return 422 if report["error"]["type"] in _CLIENT_ERRORS else 500


def _body_error(service: GenerationService, parameter: str, value: Any, constraint: str) -> JSONResponse:
    """A body that is not a request at all, in the spec's error shape (422), the parameter named."""
    error = InvalidParameterError(
        f"`{parameter}` {constraint} (got {value})", parameter=parameter, value=value, constraint=constraint
    )
    report = api_error(
        service.engine.categorize(error, {"operation": "generate"}), data_dir=str(service.settings.data_dir)
    )
    return JSONResponse({**report, "correlation_id": None}, status_code=422)


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


class EventFeed:
    """A listener that keeps the latest messages and fans them out to subscribers on their event loops."""

    def __init__(self, keep: int = 200) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = set()
        self._lock = threading.Lock()

    def __call__(self, event: RecoveryEvent) -> None:
        message = recovery_message(event)
        if message is None:
            return
        with self._lock:
            self.recent.append(message)
            subscribers = list(self._subscribers)
        for loop, inbox in subscribers:
            loop.call_soon_threadsafe(inbox.put_nowait, message)

    async def stream(self, *, replay: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Messages as they happen (after the recent ones, with ``replay``), until the consumer stops."""
        entry: tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]] = (
            asyncio.get_running_loop(),
            asyncio.Queue(),
        )
        with self._lock:
            backlog = list(self.recent) if replay else []
            self._subscribers.add(entry)
        try:
            for message in backlog:
                yield message
            while True:
                yield await entry[1].get()
        finally:
            with self._lock:
                self._subscribers.discard(entry)


def build_router(get_service: Callable[[], GenerationService], feed: EventFeed) -> APIRouter:
    """``POST /api/v1/generate``, ``GET``/``DELETE /api/v1/requests/{id}``, ``GET /api/v1/videos/{name}``,
    ``GET /api/v1/events`` (SSE)."""
    router = APIRouter(prefix="/api/v1")

    @router.post(
        "/generate",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "required": ["prompt"], "additionalProperties": True}
                    }
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
                description="1 to 64 of A-Z a-z 0-9 _ -: the request's correlation id; a repeat "
                "never runs again (a finished request answers as it ended, an unfinished one 409)",
            ),
        ] = None,
    ) -> JSONResponse:
        """Generate a video from a JSON object; a failure answers with the spec's error shape and the request's
        ``correlation_id`` (for ``GET /api/v1/requests/{id}``)."""
        service = get_service()
        if idempotency_key is not None and not CORRELATION_ID.fullmatch(idempotency_key):
            return _body_error(
                service, "Idempotency-Key", f"{idempotency_key!r:.80}", "must be 1 to 64 letters, digits, `_` or `-`"
            )
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # not JSON, not UTF-8, numbers past int's digit limit, deep nesting
            return _body_error(service, "body", "text that is not JSON", "must be a JSON object")
        if not isinstance(body, dict):
            return _body_error(service, "body", f"a JSON {type(body).__name__}", "must be a JSON object")
        if "prompt" not in body:
            return _body_error(service, "prompt", "nothing", "is required")
        try:
            result = await run_in_threadpool(service.generate_video, body, correlation_id=idempotency_key)
        except RequestExistsError as exc:
            return repeat_answer(service.request_status(exc.correlation_id or ""), exc)
        except GenerationFailedError as exc:
            return JSONResponse(
                {**exc.report, "correlation_id": exc.correlation_id}, status_code=_failure_status(exc.report)
            )
        name = result.video_path.rsplit("/", 1)[-1]
        return JSONResponse(
            {
                "video_url": f"/api/v1/videos/{name}",
                "correlation_id": result.correlation_id,
                "attempts": result.attempts,
                "degraded": result.degraded,
                "corrections": list(result.corrections),
                "changes": list(result.changes),
                "notes": list(result.notes),
                "request": result.request.to_dict(),
                "timings": dict(result.output.timings),
                "frames_sha256": result.output.frames_sha256,
            }
        )

    @router.get("/requests/{correlation_id}")
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

    @router.get("/videos/{name}")
    def video(name: str) -> Any:
        """A generated video, by file name only (no paths)."""
        path = get_service().settings.outputs_dir / name
        if not _VIDEO_NAME.fullmatch(name) or not path.is_file():
            return JSONResponse({"error": {"type": "not_found", "message": "no such video"}}, status_code=404)
        return FileResponse(path, media_type="video/mp4")

    @router.get("/events")
    async def feed_events(request: Request, replay: bool = False) -> StreamingResponse:
        """Server-Sent Events: one ``data:`` line of JSON per recovery attempt, as it happens."""

        async def body() -> AsyncIterator[str]:
            yield ": kintsugi recovery feed\n\n"
            async for message in feed.stream(replay=replay):
                if await request.is_disconnected():
                    return
                yield f"event: recovery_attempt\ndata: {json.dumps(message)}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router
