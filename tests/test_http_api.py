"""The REST API as a strict, documented contract: ``components.http_api``'s router over a real service (worker,
journal, metrics) in-process. Unknown fields, wrong types and out-of-bounds values are refused all at once and named;
only JSON is read; an ``Idempotency-Key`` reused for another request is refused; the OpenAPI document lists every
field; the answers carry the settings and the seed used."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter
from starlette.testclient import TestClient

from components.generation.request import GenerationRequest
from components.http_api import FALLBACK_HEADER, EventFeed, RestQueue, body_limit, build_router, progress_message
from components.journal import RequestState
from components.service import GenerationService
from components.settings import Settings
from components.views import (
    FeedMessage,
    GenerateBody,
    GenerateResponse,
    ReplayedResponse,
    RequestStatus,
    ServiceEvent,
    ServiceEventKind,
)
from tests.support.app_process import free_port
from tests.support.spec import SPEC_ERROR_KEYS

SMALL = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 1, "seed": 3}
I2V = "kintsugi/tiny-wan-i2v-random"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    """A real service on its own data folder (the embedded model; the hub a closed port)."""
    data_dir = tmp_path_factory.mktemp("rest-api") / "data"
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir.parent / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        opened = GenerationService(settings)
        try:
            yield opened
        finally:
            opened.close()


@pytest.fixture(scope="module")
def client(service: GenerationService) -> Iterator[TestClient]:
    feed = EventFeed()
    service.engine.bus.subscribe(feed)
    server = FastAPI(openapi_url="/api/v1/openapi.json")
    server.include_router(build_router(lambda: service, feed))
    with TestClient(server, raise_server_exceptions=False) as opened:
        yield opened


def _outputs(service: GenerationService) -> list[str]:
    return (
        sorted(path.name for path in service.settings.outputs_dir.glob("*"))
        if service.settings.outputs_dir.exists()
        else []
    )


def _runs(service: GenerationService) -> int:
    with sqlite3.connect(service.settings.metrics_db) as reader:
        return int(reader.execute("SELECT COUNT(*) FROM runs WHERE attempts > 0").fetchone()[0])


def _error(answer: Any, status: int = 422) -> dict[str, Any]:
    """The error of an answer in the spec's shape (plus ``fields``), checked to hold nothing raw."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "correlation_id"}
    assert SPEC_ERROR_KEYS <= set(body["error"]) <= SPEC_ERROR_KEYS | {"fields"}
    for raw in ("Traceback", 'File "', ".py", "/tmp", "pydantic", "Input should"):
        assert raw not in answer.text
    return body["error"]


# -- the body: refused as a whole, every problem named ------------------------------------------------------------
def test_unknown_field_is_refused_named_with_a_suggestion_and_nothing_runs(
    client: TestClient, service: GenerationService
) -> None:
    """`frames` (for `num_frames`) is refused, named with the field it resembles; the request is journaled as
    failed with that error and counted as a run of no attempt, never accepted, and no video is written."""
    before = _outputs(service)
    answer = client.post("/api/v1/generate", json={**SMALL, "frames": 17})
    error = _error(answer)
    assert error["type"] == "invalid_parameters"
    assert error["message"] == "`frames` is not a parameter (did you mean `num_frames`?)"
    assert error["fields"] == [
        {"parameter": "frames", "value": 17, "constraint": "is not a parameter (did you mean `num_frames`?)"}
    ]
    correlation_id = answer.json()["correlation_id"]
    entry = service.request_status(correlation_id)
    assert entry is not None and entry.status is RequestState.FAILED and entry.request is None
    assert entry.result is not None and entry.result["error"] == error
    with sqlite3.connect(service.settings.metrics_db) as reader:
        run = reader.execute("SELECT ok, attempts FROM runs WHERE correlation_id = ?", (correlation_id,)).fetchone()
    assert run == (0, 0) and _outputs(service) == before


def test_every_invalid_field_is_reported_at_once(client: TestClient) -> None:
    """Five problems in one body are five entries of `error.fields`, each named in the message too."""
    body = {"prompt": " ", "width": 5000, "steps": 0, "seed": -1, "frames": 3}
    error = _error(client.post("/api/v1/generate", json=body))
    assert [field["parameter"] for field in error["fields"]] == ["prompt", "width", "steps", "seed", "frames"]
    assert error["message"].startswith("5 parameters are invalid: ")
    for name in ("prompt", "width", "steps", "seed", "frames"):
        assert f"`{name}`" in error["message"]
    assert {"parameter": "width", "value": 5000, "constraint": "must be between 16 and 1024"} in error["fields"]


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("width", "64", "must be a whole number"),
        ("steps", True, "must be a whole number"),
        ("num_frames", 16.5, "must be a whole number"),
        ("guidance_scale", "5", "must be a finite number"),
        ("prompt", 7, "must be text"),
        ("model_id", "../etc/passwd", "must look like owner/name (letters, digits, '-', '_', '.')"),
        ("allow_fallback", "yes", "must be true, false or null"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_it(
    client: TestClient, field: str, value: Any, constraint: str
) -> None:
    """Text for a number, a boolean for a count, a fraction of a frame: refused with the rule, not coerced."""
    error = _error(client.post("/api/v1/generate", json={**SMALL, field: value}))
    assert [(item["parameter"], item["constraint"]) for item in error["fields"]] == [(field, constraint)]


def test_missing_prompt_is_named_beside_the_other_problems(client: TestClient) -> None:
    """A body without `prompt` says so, and still lists what else is wrong."""
    error = _error(client.post("/api/v1/generate", json={"width": 0, "fps": 99}))
    assert [(item["parameter"], item["constraint"]) for item in error["fields"]] == [
        ("prompt", "is required"),
        ("width", "must be between 16 and 1024"),
        ("fps", "must be between 1 and 60"),
    ]


def test_shape_rules_are_still_corrected_and_the_answer_carries_seed_and_settings(client: TestClient) -> None:
    """Width 100 and 16 frames are not refused: corrected (96, 17) and reported; the answer matches
    `GenerateResponse`, with the settings used and the seed drawn for a `null` seed, and no fallback."""
    answer = client.post("/api/v1/generate", json={**SMALL, "width": 100, "num_frames": 16, "seed": None})
    assert answer.status_code == 200, answer.text
    body = GenerateResponse.model_validate(answer.json())
    assert body.request.width == 96 and body.request.num_frames == 17
    assert any("width 100 → 96" in line for line in body.corrections)
    assert body.seed == body.request.seed and any(str(body.seed) in line for line in body.corrections)
    assert body.fallback is None and FALLBACK_HEADER not in answer.headers and body.changed is False
    assert set(answer.json()["request"]) == set(GenerationRequest.__dataclass_fields__)


# -- content type -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"],
)
def test_a_body_that_is_not_json_by_its_content_type_is_415(
    client: TestClient, service: GenerationService, content_type: str
) -> None:
    """Anything but application/json (or multipart/form-data) answers 415 in the error shape, naming
    `Content-Type`; nothing is journaled."""
    before = service.journal.unfinished(), _outputs(service)
    answer = client.post("/api/v1/generate", content=b'{"prompt": "a boat"}', headers={"content-type": content_type})
    error = _error(answer, 415)
    assert answer.json()["correlation_id"] is None and "`Content-Type`" in error["message"]
    assert error["fields"] == [
        {
            "parameter": "Content-Type",
            "value": content_type,
            "constraint": "must be application/json or multipart/form-data",
        }
    ]
    assert (service.journal.unfinished(), _outputs(service)) == before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_with_or_without_charset_is_read(client: TestClient, content_type: str) -> None:
    """application/json, with a charset or in capitals, is read: here a refused step count, not a 415."""
    answer = client.post(
        "/api/v1/generate", content=b'{"prompt": "a boat", "steps": 0}', headers={"content-type": content_type}
    )
    assert _error(answer)["fields"][0]["parameter"] == "steps"


# -- Idempotency-Key ----------------------------------------------------------------------------------------------
def _key() -> str:
    return uuid.uuid4().hex


def test_a_key_reused_with_a_different_body_is_a_conflict_and_nothing_runs(
    client: TestClient, service: GenerationService
) -> None:
    """The same key with another seed answers 422 `idempotency_conflict`: not the first result, and no run,
    journal change or video."""
    key = _key()
    assert client.post("/api/v1/generate", json=SMALL, headers={"Idempotency-Key": key}).status_code == 200
    entry, runs, videos = service.request_status(key), _runs(service), _outputs(service)
    answer = client.post("/api/v1/generate", json={**SMALL, "seed": 9}, headers={"Idempotency-Key": key})
    error = _error(answer)
    assert error["type"] == "idempotency_conflict" and answer.json()["correlation_id"] is None
    assert "different request" in error["message"] and "video_url" not in answer.json()
    assert (service.request_status(key), _runs(service), _outputs(service)) == (entry, runs, videos)


def test_a_key_reused_with_the_same_request_spelled_differently_replays(client: TestClient) -> None:
    """Defaults written out, keys reordered, a width that corrects to the same one: the same request, so the
    first answer is replayed (with its seed), not a conflict."""
    key = _key()
    first = client.post("/api/v1/generate", json=SMALL, headers={"Idempotency-Key": key}).json()
    same = {"fps": 8, "negative_prompt": "", **dict(reversed(list(SMALL.items()))), "width": 70}
    again = client.post("/api/v1/generate", json=same, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    body = ReplayedResponse.model_validate(again.json())
    assert body.video_url == first["video_url"] and body.seed == first["seed"] == SMALL["seed"]


def test_a_refused_key_replays_the_same_refusal_and_refuses_another_body(client: TestClient) -> None:
    """A key first sent with an invalid body: the same body replays the refusal, a valid one is a conflict."""
    key = _key()
    first = client.post("/api/v1/generate", json={**SMALL, "steps": 0}, headers={"Idempotency-Key": key})
    again = client.post("/api/v1/generate", json={**SMALL, "steps": 0}, headers={"Idempotency-Key": key})
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/api/v1/generate", json=SMALL, headers={"Idempotency-Key": key})
    assert _error(other)["type"] == "idempotency_conflict"


def test_a_replay_says_when_another_model_stood_in(client: TestClient, service: GenerationService) -> None:
    """A completed request whose video came from another model than the one asked: the replay carries
    `fallback` and the Kintsugi-Fallback header."""
    key, asked = _key(), "someone/big-model"
    checked = {**GenerationRequest(**{**SMALL, "model_id": asked, "allow_fallback": True}).to_dict()}
    service.journal.accept(key, checked)  # as the service journals it: consent resolved
    used = {**checked, "model_id": "kintsugi/tiny-wan-random"}
    service.journal.complete(
        key,
        {
            "video": f"{key}-1.mp4",
            "attempts": 2,
            "degraded": False,
            "changes": [],
            "request": used,
            "frames_sha256": "0",
        },
    )
    answer = client.post(
        "/api/v1/generate", json={**SMALL, "model_id": asked, "allow_fallback": True}, headers={"Idempotency-Key": key}
    )
    assert answer.status_code == 200
    assert answer.json()["fallback"] == {"from_model": asked, "to_model": "kintsugi/tiny-wan-random"}
    assert answer.headers[FALLBACK_HEADER] == f"{asked} -> kintsugi/tiny-wan-random"


# -- the OpenAPI document -----------------------------------------------------------------------------------------
def _schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_openapi_lists_every_request_field_and_refuses_others(client: TestClient) -> None:
    """The request body's schema names every `GenerationRequest` field (and `allow_fallback`), with
    `additionalProperties: false` and the bounds of LIMITS."""
    document = client.get("/api/v1/openapi.json").json()
    operation = document["paths"]["/api/v1/generate"]["post"]
    body = _schema(document, operation["requestBody"]["content"]["application/json"]["schema"])
    request_fields = set(GenerationRequest.__dataclass_fields__)
    assert request_fields <= set(body["properties"]) == set(GenerateBody.model_fields)
    assert body["additionalProperties"] is False and body["required"] == ["prompt"]
    assert (body["properties"]["width"]["minimum"], body["properties"]["width"]["maximum"]) == (16, 1024)


def test_openapi_documents_answers_and_errors_in_our_shape(client: TestClient) -> None:
    """200 names the result's fields (seed, request, fallback among them), every error status the spec's shape;
    FastAPI's own validation error is never the documented 422 of generate."""
    document = client.get("/api/v1/openapi.json").json()
    responses = document["paths"]["/api/v1/generate"]["post"]["responses"]
    schemas = document["components"]["schemas"]
    assert set(GenerateResponse.model_fields) <= set(schemas["GenerateResponse"]["properties"])
    assert {"seed", "request", "fallback", "corrections"} <= set(schemas["GenerateResponse"]["required"])
    for status in ("409", "415", "422", "500"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
    assert "fields" in schemas["ErrorBody"]["properties"]
    status_schema = document["paths"]["/api/v1/requests/{correlation_id}"]["get"]["responses"]["200"]
    assert status_schema["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RequestStatus"}
    assert set(RequestStatus.model_fields) <= set(schemas["RequestStatus"]["properties"])


def test_openapi_documents_the_event_feed_messages(client: TestClient) -> None:
    """The feed's 200 is text/event-stream with one schema per message type, told apart by `type`."""
    document = client.get("/api/v1/openapi.json").json()
    content = document["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]
    mapping = content["text/event-stream"]["schema"]["discriminator"]["mapping"]
    assert set(mapping) == {"recovery_attempt", "progress", "queue"}
    progress = document["components"]["schemas"]["ProgressData"]["properties"]
    assert {"phase", "step", "total", "eta_s"} <= set(progress)


@pytest.mark.parametrize("query", ["replay=maybe", "types=progress,gossip", "types="])
def test_event_feed_refuses_bad_query_values_in_our_shape(client: TestClient, query: str) -> None:
    """A feed query out of its values answers 422 in the spec's shape naming it, not FastAPI's own body."""
    error = _error(client.get(f"/api/v1/events?{query}"))
    assert f"`{query.split('=')[0]}`" in error["message"]


# -- videos -------------------------------------------------------------------------------------------------------
def test_a_video_named_in_the_new_form_is_served(client: TestClient, service: GenerationService) -> None:
    """`<date>-<time>-<prompt slug>-<correlation id>-<attempt>.mp4` (here 200 characters before `.mp4`) is
    served; 201 characters is not a video name."""
    service.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    stem = "20261201-134500-a-paper-boat-" + "k" * 64
    name = (stem + "-x" * 100)[:198] + "-1"
    (service.settings.outputs_dir / f"{name}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (service.settings.outputs_dir / f"a{name}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    assert len(name) == 200
    served = client.get(f"/api/v1/videos/{name}.mp4")
    assert served.status_code == 200 and served.content[4:8] == b"ftyp"
    assert client.get(f"/api/v1/videos/a{name}.mp4").status_code == 404


# -- the feed's own messages --------------------------------------------------------------------------------------
# -- image-to-video: the image as base64 -------------------------------------------------------------------------
def _png(size: tuple[int, int] = (80, 48), colour: str = "red", fmt: str = "PNG") -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("image", "constraint", "value"),
    [
        ("this is not base64!", "must be base64 text or a data URL", "text that is not base64"),
        (_png(fmt="GIF"), "must be a PNG, JPEG or WebP image", "a GIF image"),
        ("data:image/png;base64," + _png(fmt="BMP"), "must be a PNG, JPEG or WebP image", "a BMP image"),
        (12345, "must be base64 text or a data URL (data:image/png;base64,...)", 12345),
    ],
    ids=["not-base64", "gif", "bmp-data-url", "a-number"],
)
def test_a_bad_image_is_refused_naming_image_and_nothing_runs(
    client: TestClient, service: GenerationService, image: Any, constraint: str, value: Any
) -> None:
    """Base64 that is not, a format other than PNG/JPEG/WebP, or not text at all: 422 in our shape, `image`
    named in `fields` with what was sent (described, never echoed), journaled as refused, no video."""
    before = _outputs(service)
    answer = client.post("/api/v1/generate", json={**SMALL, "model_id": "someone/an-image-model", "image": image})
    error = _error(answer)
    assert error["type"] == "invalid_parameters"
    assert error["fields"] == [{"parameter": "image", "value": value, "constraint": constraint}]
    entry = service.request_status(answer.json()["correlation_id"])
    assert entry is not None and entry.status is RequestState.FAILED and entry.request is None
    assert _outputs(service) == before


def test_an_image_over_the_upload_limit_is_refused_naming_image(
    client: TestClient, service: GenerationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image past KINTSUGI_MAX_UPLOAD_BYTES (here 2 KiB) is refused by its size, named."""
    monkeypatch.setattr(service, "settings", replace(service.settings, max_upload_bytes=2048))
    noise = base64.b64encode(bytes(range(256)) * 12).decode()  # about 3 KB: refused before it is decoded
    error = _error(client.post("/api/v1/generate", json={**SMALL, "model_id": "someone/a-model", "image": noise}))
    assert [field["parameter"] for field in error["fields"]] == ["image"]
    assert error["fields"][0]["constraint"] == "must be at most 2.0 KiB"


def test_a_body_far_over_the_limit_is_413_before_it_is_parsed(
    client: TestClient, service: GenerationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body larger than the largest image's base64 and the rest allow is refused with 413 naming `body`,
    from its Content-Length, before it is read as JSON; nothing is journaled."""
    monkeypatch.setattr(service, "settings", replace(service.settings, max_upload_bytes=2048))
    answer = client.post("/api/v1/generate", json={**SMALL, "image": "A" * (body_limit(service) + 10)})
    error = _error(answer, 413)
    assert error["fields"][0]["parameter"] == "body" and answer.json()["correlation_id"] is None


def test_a_text_to_video_model_refuses_an_image_before_anything_runs(
    client: TestClient, service: GenerationService
) -> None:
    """The built-in Wan text-to-video model with an image: 422 naming `image` and the model, before the image is
    decoded or anything runs."""
    uploads = service.settings.uploads_dir
    before, runs, kept = _outputs(service), _runs(service), len(list(uploads.glob("*"))) if uploads.exists() else 0
    answer = client.post("/api/v1/generate", json={**SMALL, "image": _png()})
    error = _error(answer)
    (field,) = error["fields"]
    assert field["parameter"] == "image"
    assert field["constraint"].startswith("is not taken by kintsugi/tiny-wan-random")
    assert "`image` is not taken" in error["message"]
    assert (_outputs(service), _runs(service)) == (before, runs)
    assert (len(list(uploads.glob("*"))) if uploads.exists() else 0) == kept


def test_openapi_documents_the_image(client: TestClient) -> None:
    """The body's `image` is documented as base64 with its limits, the multipart form with its file, the
    answer's image as a file name; 413 is listed."""
    document = client.get("/api/v1/openapi.json").json()
    operation = document["paths"]["/api/v1/generate"]["post"]
    body = _schema(document, operation["requestBody"]["content"]["application/json"]["schema"])
    image = body["properties"]["image"]
    assert image["contentEncoding"] == "base64" and "PNG, JPEG or WebP" in image["description"]
    assert "KINTSUGI_MAX_UPLOAD_BYTES" in image["description"]
    assert "image" in document["components"]["schemas"]["UsedSettings"]["properties"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["request"] and form["properties"]["image"]["format"] == "binary"
    assert operation["responses"]["413"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


def test_a_key_reused_with_the_same_refused_image_replays_the_refusal(client: TestClient) -> None:
    """An image refused under a key, sent again with the same key: the refusal replays, nothing runs; the same key
    without the image is another request (a conflict)."""
    key, body = _key(), {**SMALL, "image": _png()}
    first = client.post("/api/v1/generate", json=body, headers={"Idempotency-Key": key})
    again = client.post("/api/v1/generate", json=body, headers={"Idempotency-Key": key})
    assert _error(first)["fields"][0]["parameter"] == "image"
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert _error(client.post("/api/v1/generate", json=SMALL, headers={"Idempotency-Key": key}))["type"] == (
        "idempotency_conflict"
    )


def _form(request: dict[str, Any] | None, image: bytes | None = None, **extra: Any) -> dict[str, Any]:
    """A multipart body: the request as a JSON field, the image as a file part."""
    data = {"request": json.dumps(request)} if request is not None else {}
    files = {"image": ("photo.png", image, "image/png")} if image is not None else {}
    return {"data": {**data, **extra}, "files": files or None}


def test_multipart_takes_the_request_as_json_and_the_image_as_a_file(
    client: TestClient, service: GenerationService
) -> None:
    """A multipart body is read as the JSON body is: here its file is a GIF, refused naming `image`; its
    `request` field is checked strictly too."""
    gif = base64.b64decode(_png(fmt="GIF"))
    answer = client.post("/api/v1/generate", **_form({**SMALL, "model_id": "someone/an-image-model"}, gif))
    assert _error(answer)["fields"] == [
        {"parameter": "image", "value": "a GIF image", "constraint": "must be a PNG, JPEG or WebP image"}
    ]
    answer = client.post("/api/v1/generate", **_form({**SMALL, "frames": 5}, base64.b64decode(_png())))
    assert _error(answer)["fields"][0]["parameter"] == "frames"


def test_multipart_on_a_text_to_video_model_refuses_the_file_naming_image(client: TestClient) -> None:
    """An image file for the built-in text-to-video model is refused naming `image`, as base64 is."""
    answer = client.post("/api/v1/generate", **_form(SMALL, base64.b64decode(_png())))
    (field,) = _error(answer)["fields"]
    assert field["parameter"] == "image" and field["constraint"].startswith("is not taken by")


@pytest.mark.parametrize(
    ("form", "parameter"),
    [
        (_form(None, b"\x89PNG"), "request"),
        (_form(SMALL, b"\x89PNG", other="x"), "other"),
        (_form({**SMALL, "image": "iVBORw0KGgo="}, b"\x89PNG"), "image"),
    ],
    ids=["no-request-field", "unknown-part", "image-twice"],
)
def test_a_multipart_body_of_another_shape_is_refused_naming_the_part(
    client: TestClient, form: dict[str, Any], parameter: str
) -> None:
    """No `request` field, a part that is not one, or an image both as a file and as base64: refused, named."""
    answer = client.post("/api/v1/generate", **form)
    assert _error(answer)["fields"][0]["parameter"] == parameter


def test_a_multipart_body_that_does_not_parse_is_refused(client: TestClient) -> None:
    """A body that says multipart but is not is refused naming `body` and the shape expected."""
    answer = client.post(
        "/api/v1/generate", content=b'{"prompt": "a boat"}', headers={"content-type": "multipart/form-data; boundary=x"}
    )
    error = _error(answer)
    assert error["fields"][0]["parameter"] == "body" and "multipart/form-data" in error["message"]


def test_an_image_to_video_model_makes_a_video_from_an_uploaded_file(client: TestClient) -> None:
    """The same request as multipart, the image as a file part: a video, the crop reported."""
    answer = client.post("/api/v1/generate", **_form({**SMALL, "model_id": I2V}, base64.b64decode(_png((80, 48)))))
    assert answer.status_code == 200, answer.text
    assert "image 80×48 → cropped and resized to 64×64" in answer.json()["corrections"]


def test_an_image_to_video_model_makes_a_video_from_a_base64_image(client: TestClient) -> None:
    """The tiny Wan image-to-video model with a data-URL PNG: a video; the crop is in `corrections`, the image in
    `request` by its file name (no path)."""
    body = {**SMALL, "model_id": I2V, "image": "data:image/png;base64," + _png((80, 48))}
    answer = client.post("/api/v1/generate", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert "image 80×48 → cropped and resized to 64×64" in result["corrections"]
    assert result["request"]["image"].endswith(".png") and "/" not in result["request"]["image"]
    assert client.get(result["video_url"]).status_code == 200


def test_queue_positions_move_up_as_requests_ahead_end() -> None:
    """Three REST requests in flight are at 1, 2, 3; when the first ends, the two behind it are told 1 and 2."""
    sent: list[dict[str, Any]] = []
    line = RestQueue(sent.append)
    for name in ("a", "b", "c"):
        line.join(name)
    line.leave("a")
    line.leave("a")  # a second leave changes nothing
    assert [(m["correlation_id"], m["data"]["position"], m["data"]["ahead"]) for m in sent] == [
        ("a", 1, 0),
        ("b", 2, 1),
        ("c", 3, 2),
        ("b", 1, 0),
        ("c", 2, 1),
    ]


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (ServiceEventKind.PHASE, {"phase": "load", "attempt": 1}, ("load", None, None, None)),
        (ServiceEventKind.PROGRESS, {"step": 1, "total": 4, "attempt": 1}, ("denoise", 1, 4, None)),
        (ServiceEventKind.PROGRESS, {"phase": "decode", "step": 2, "total": 3, "eta_s": 1.5}, ("decode", 2, 3, 1.5)),
    ],
)
def test_progress_messages_are_made_from_phase_and_step_events(
    kind: ServiceEventKind, data: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    """A phase start and a step (denoise unless the event names its phase) become typed `progress` messages."""
    message = progress_message(ServiceEvent(kind, "", data), "abc")
    assert message is not None and TypeAdapter(FeedMessage).validate_python(message).type == "progress"
    assert (message["data"]["phase"], message["data"]["step"], message["data"]["total"], message["data"]["eta_s"]) == (
        expected
    )


@pytest.mark.parametrize("kind", [ServiceEventKind.CORRECTION, ServiceEventKind.DOWNLOAD, ServiceEventKind.RECOVERY])
def test_other_service_events_are_not_progress(kind: ServiceEventKind) -> None:
    """Corrections, downloads and recovery events are not `progress` (recovery has its own message)."""
    assert progress_message(ServiceEvent(kind, "", {}), "abc") is None


def test_a_key_reused_with_the_same_image_replays_the_video(client: TestClient, service: GenerationService) -> None:
    """The same image under the same key is the same request (one prepared file): the answer replays, naming the
    image by file name; another image under that key is a conflict."""
    key, body = _key(), {**SMALL, "model_id": I2V, "image": _png((80, 48), "teal")}
    first = client.post("/api/v1/generate", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    again = client.post("/api/v1/generate", json=body, headers={"Idempotency-Key": key})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["request"]["image"] == first.json()["request"]["image"]
    assert "/" not in again.json()["request"]["image"]
    other = client.post(
        "/api/v1/generate", json={**body, "image": _png((80, 48), "navy")}, headers={"Idempotency-Key": key}
    )
    assert _error(other)["type"] == "idempotency_conflict"
