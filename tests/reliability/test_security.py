"""Security, each claim checked for real: model ids, safetensors only, no remote code, files served only from the
output folder, the hub token never shown, the prompt limit, and no raw errors for the browser."""

from __future__ import annotations

import ast
import json
import os
import pickle
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from components.generation.request import GenerationRequest, validate_request
from recovery.errors import InvalidParameterError
from tests.reliability.conftest import AppProcess, started_app
from tests.support.app_process import ROOT

BAD_MODEL_IDS = [
    "../etc/passwd",
    "owner/../name",
    "owner/..",
    "/abs/path",
    "/etc/passwd/x",
    "owner\\name",
    "C:\\models/x",
    "https://huggingface.co/owner/name",
    "hf://owner/name",
    "file:///etc/passwd",
    "owner/name/extra",
    "owner",
    "./owner/name",
    "owner/name?revision=x",
    "owner name/x",
    "~/models/x",
    "owner/name\n",
]
SMALL = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 1, "seed": 1}


# -- model ids ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", BAD_MODEL_IDS)
def test_request_refuses_model_ids_that_are_not_owner_name(model_id: str) -> None:
    """Traversal, absolute paths, backslashes, URLs and extra segments are refused, naming `model_id`."""
    with pytest.raises(InvalidParameterError, match="`model_id`") as caught:
        validate_request(GenerationRequest(prompt="x", model_id=model_id))
    assert caught.value.parameter == "model_id"


def test_request_accepts_a_hub_id() -> None:
    """The check is not a blanket refusal: a real hub id passes unchanged."""
    checked, _ = validate_request(GenerationRequest(prompt="x", model_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers"))
    assert checked.model_id == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


@pytest.mark.parametrize("model_id", BAD_MODEL_IDS)
def test_rest_refuses_model_ids_that_are_not_owner_name(api_client: Any, model_id: str) -> None:
    """Over REST the same ids answer 422 naming `model_id`, and the request never runs."""
    answer = api_client.post("/api/v1/generate", json={**SMALL, "model_id": model_id})
    assert answer.status_code == 422 and "`model_id`" in answer.json()["error"]["message"]
    assert api_client.get(f"/api/v1/requests/{answer.json()['correlation_id']}").json()["status"] == "failed"


# -- weights: safetensors only -----------------------------------------------------------------------------------
@pytest.fixture
def pickle_only_model(tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    """The tiny model with its transformer weights as a pickle `.bin` (no safetensors) that, if ever unpickled,
    creates a marker file; returns the folder and the marker's path."""
    from safetensors.torch import load_file

    folder, marker = tmp_path / "pickle-model", tmp_path / "UNPICKLED"
    shutil.copytree(tiny_model, folder)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = dict(load_file(weights))
    state["payload"] = _Payload(str(marker))
    with open(weights.with_suffix(".bin"), "wb") as out:
        pickle.dump(state, out)
    weights.unlink()
    return folder, marker


@dataclass
class _Payload:
    marker: str

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_pipeline_refuses_a_pickle_only_model_without_opening_it(pickle_only_model: tuple[Path, Path]) -> None:
    """The product's loader (use_safetensors=True) fails on a `.bin`-only component and never unpickles it."""
    from components.generation.pipeline import WanGenerator

    folder, marker = pickle_only_model
    with pytest.raises(OSError, match="safetensors"):
        WanGenerator(device="cpu", dtype="float32").load(folder, "someone/pickled")
    assert not marker.exists()


def test_without_the_flag_diffusers_would_reach_for_the_pickle(pickle_only_model: tuple[Path, Path]) -> None:
    """Control: diffusers' default falls back to the `.bin` ("unsafe serialization"), so the flag is what
    protects us (torch's weights-only unpickler is all that stands in the way then)."""
    from diffusers import WanPipeline

    folder, _marker = pickle_only_model
    with pytest.raises(OSError, match=r"diffusion_pytorch_model\.bin"):
        WanPipeline.from_pretrained(folder)


def _product_sources() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "components").rglob("*.py")), *sorted((ROOT / "recovery").rglob("*.py"))]


def test_no_remote_code_in_product_code() -> None:
    """No product module mentions `trust_remote_code`: model repositories never run their own code here."""
    sources = _product_sources()
    assert len(sources) > 20
    assert [path.name for path in sources if "trust_remote_code" in path.read_text()] == []


def test_every_from_pretrained_call_asks_for_safetensors() -> None:
    """Each `from_pretrained(` call in product code passes `use_safetensors=True`."""
    calls = [
        (path.name, node)
        for path in _product_sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained"
    ]
    safe = [
        any(k.arg == "use_safetensors" and getattr(k.value, "value", None) is True for k in node.keywords)
        for _name, node in calls
    ]
    assert calls and all(safe), [name for (name, _node), ok in zip(calls, safe) if not ok]


# -- prompt size --------------------------------------------------------------------------------------------------
def test_megabyte_prompt_is_refused_naming_it() -> None:
    """A 1 MB prompt is refused naming `prompt`, and the message does not echo it."""
    with pytest.raises(InvalidParameterError, match="`prompt`") as caught:
        validate_request(GenerationRequest(prompt="x" * 1_000_000))
    assert len(str(caught.value)) < 200


def test_rest_megabyte_prompt_is_refused_naming_it(api_client: Any) -> None:
    """Over REST a 1 MB prompt answers 422 naming `prompt`, with a short answer and nothing stored."""
    answer = api_client.post("/api/v1/generate", json={**SMALL, "prompt": "x" * 1_000_000})
    assert answer.status_code == 422 and "`prompt`" in answer.json()["error"]["message"]
    assert len(answer.content) < 2000


# -- the running app: files, token, errors -----------------------------------------------------------------------
@dataclass
class EchoHub:
    """A hostile hub: answers 401 and echoes the caller's Authorization header in the body and a header."""

    seen: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def __enter__(self) -> EchoHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                auth = self.headers.get("authorization", "")
                hub.seen.append(auth)
                body = json.dumps({"error": f"Invalid credentials in Authorization header: {auth}"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Error-Message", f"bad token {auth}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _answer

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop listening: the hub's port is closed from now on."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __exit__(self, *_exc: object) -> None:
        self.close()


TOKEN = "hf_" + secrets.token_hex(16)


@dataclass
class HubFailures:
    """What the app said while two hub requests failed: a 401 that echoed the token, then a closed port."""

    app: AppProcess
    answers: list[httpx.Response]
    sse: str
    hub_saw: list[str]
    video_url: str


@pytest.fixture(scope="module")
def hub_failures(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[HubFailures]:
    """The app with HF_TOKEN set and HF_ENDPOINT on the echoing hub; one small video made, then one request for a
    hub model while the hub answers 401, one after the hub's port closed; the SSE feed read throughout."""
    data_dir = tmp_path_factory.mktemp("secure") / "data"
    with (
        EchoHub() as hub,
        started_app(
            data_dir, tiny_model, HF_TOKEN=TOKEN, HF_ENDPOINT=hub.url, KINTSUGI_MAX_RECOVERY_ATTEMPTS="1"
        ) as app,
    ):
        made = httpx.post(app.url + "api/v1/generate", json=SMALL, timeout=180)
        assert made.status_code == 200, made.text
        chunks: list[str] = []
        feed_client = httpx.Client(timeout=None)

        def read_feed() -> None:
            try:
                with feed_client.stream("GET", app.url + "api/v1/events") as stream:
                    chunks.extend(stream.iter_text())
            except (httpx.HTTPError, RuntimeError):
                pass  # closed below, once both requests are answered

        reader = threading.Thread(target=read_feed, daemon=True)
        reader.start()
        answers = [
            httpx.post(app.url + "api/v1/generate", json={**SMALL, "model_id": "someone/private-model"}, timeout=180)
        ]
        hub.close()
        answers.append(
            httpx.post(app.url + "api/v1/generate", json={**SMALL, "model_id": "someone/other-model"}, timeout=180)
        )
        time.sleep(0.5)  # the last message is sent as the answer is; let it arrive
        feed_client.close()
        reader.join(timeout=10)
        yield HubFailures(app, answers, "".join(chunks), list(hub.seen), made.json()["video_url"])


def test_the_hub_really_received_the_token(hub_failures: HubFailures) -> None:
    """Control: the token travelled to the hub and both requests failed, so its absence below means something."""
    assert any(TOKEN in header for header in hub_failures.hub_saw)
    assert [answer.status_code for answer in hub_failures.answers] == [500, 500]
    assert hub_failures.sse.count("recovery_attempt") >= 2


def test_token_absent_from_api_answers(hub_failures: HubFailures) -> None:
    """Neither REST error answer contains the token, nor its Bearer header."""
    for answer in hub_failures.answers:
        assert TOKEN not in answer.text and "error" in answer.json() and answer.json()["correlation_id"]


def test_token_absent_from_the_event_feed(hub_failures: HubFailures) -> None:
    """The SSE recovery messages sent while the hub failed never carry the token."""
    assert TOKEN not in hub_failures.sse


def test_token_absent_from_every_file_the_app_wrote(hub_failures: HubFailures) -> None:
    """Metrics DB (and its WAL), journal, store state, outputs: no byte sequence of the token anywhere."""
    files = [path for path in hub_failures.app.data_dir.rglob("*") if path.is_file()]
    assert any(path.name == "metrics.sqlite" for path in files) and any(path.name == "journal.sqlite" for path in files)
    assert [path.name for path in files if TOKEN.encode() in path.read_bytes()] == []


def test_token_absent_from_the_app_log(hub_failures: HubFailures) -> None:
    """The app's stderr (uvicorn, logging, warnings) never prints the token."""
    assert TOKEN not in hub_failures.app.log.read_text(errors="replace")


def test_failure_status_names_no_token(hub_failures: HubFailures) -> None:
    """GET /api/v1/requests/{id} of a failed hub request shows it failed, with the error, without the token."""
    correlation_id = hub_failures.answers[0].json()["correlation_id"]
    status = httpx.get(f"{hub_failures.app.url}api/v1/requests/{correlation_id}", timeout=10)
    assert status.json()["status"] == "failed" and status.json()["error"] and TOKEN not in status.text


def _gradio_file(app: AppProcess, path: str) -> int:
    return httpx.get(f"{app.url}gradio_api/file={path}", timeout=10).status_code


def test_gradio_serves_a_video_from_the_output_folder(hub_failures: HubFailures) -> None:
    """Control: Gradio's file route does serve a file in the output folder."""
    name = hub_failures.video_url.rsplit("/", 1)[-1]
    assert _gradio_file(hub_failures.app, str(hub_failures.app.data_dir / "outputs" / name)) == 200


@pytest.mark.parametrize(
    "target",
    [
        "/etc/passwd",
        "{data}/journal.sqlite",
        "{data}/metrics.sqlite",
        "{data}/outputs/../journal.sqlite",
        "{root}/app.py",
        "{data}/models/tiny-wan-random/model_index.json",
    ],
)
def test_gradio_serves_nothing_outside_the_output_folder(hub_failures: HubFailures, target: str) -> None:
    """Gradio's file route refuses files outside the output folder: system files, the app's databases, code,
    model files, and `..` out of the output folder."""
    path = target.format(data=hub_failures.app.data_dir, root=ROOT)
    assert Path(os.path.normpath(path)).is_file()
    assert _gradio_file(hub_failures.app, path) != 200


def test_gradio_show_error_is_off(hub_failures: HubFailures) -> None:
    """The page's config says show_error is off: raw exception text never reaches the browser."""
    config = httpx.get(hub_failures.app.url + "config", timeout=10).json()
    assert config["show_error"] is False


def test_failing_request_message_has_no_traceback_or_paths(hub_failures: HubFailures) -> None:
    """A failed hub request over the Gradio API and over REST says what happened in plain words: no traceback,
    no source file, no path, no token."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(hub_failures.app.url, verbose=False)
    try:
        with pytest.raises(AppError) as caught:
            client.predict("a boat", "", "someone/third-model", 64, 64, 5, 1, 5.0, 1, 8, api_name="/generate")
    finally:
        client.close()  # its heartbeat stream would otherwise hold the app's shutdown
    texts = [str(caught.value), *(answer.text for answer in hub_failures.answers)]
    for text in texts:
        assert "Traceback" not in text and 'File "' not in text and ".py" not in text
        assert str(hub_failures.app.data_dir.parent) not in text and "/tmp" not in text and TOKEN not in text
