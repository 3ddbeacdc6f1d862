"""The web app as API clients meet it: `python app.py` started for real, driven with gradio_client and HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.app_process import running_app
from tests.support.spec import SPEC_ERROR_KEYS


@pytest.fixture(scope="module")
def app_url(api_app_url: str) -> str:
    """The session's ``python app.py`` (tests/conftest.py), shared with the load test."""
    return api_app_url


def _client(url: str):  # -> gradio_client.Client
    from gradio_client import Client

    return Client(url, verbose=False)


ARGS = ("a paper boat", "", "kintsugi/tiny-wan-random", 64, 64, 5, 2, 5.0, 1, 8)


def test_api_generate_streams_timeline_then_video(app_url: str) -> None:
    """Over gradio_client, /generate streams timeline updates and ends with an mp4 and the result panel."""
    job = _client(app_url).submit(*ARGS, api_name="/generate")
    updates = list(job)
    video, panel = job.result()
    assert len(updates) >= 3
    assert Path(video).suffix == ".mp4" and Path(video).stat().st_size > 0
    assert "5 frames" in panel and "random" in panel


def test_api_failure_is_a_catalogued_message_without_raw_text(app_url: str) -> None:
    """A request that cannot run (an empty prompt) fails with the plain-language message naming the parameter,
    no traceback or path."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        _client(app_url).predict("", *ARGS[1:], api_name="/generate")
    text = str(caught.value)
    assert "What you can do" in text and "Prompt must not be empty" in text
    assert "Traceback" not in text and "/tmp" not in text and ".py" not in text


def test_api_lists_only_the_documented_endpoints(app_url: str) -> None:
    """view_api shows the public endpoints, with their parameters' names, and none of the page's internal ones."""
    info = _client(app_url).view_api(print_info=False, return_format="dict")
    names = set(info["named_endpoints"])
    assert {"/generate", "/models", "/model_quick_check", "/metrics", "/chaos_inject"} <= names
    assert not info["unnamed_endpoints"]
    assert not [name for name in names if re.search(r"_\d+$|lambda|model_picker|metrics_view|model_table", name)]
    parameters = [p["parameter_name"] for p in info["named_endpoints"]["/generate"]["parameters"]]
    assert parameters == [
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
        "image",
    ]


def test_api_allow_fallback_left_out_is_the_services_rule(app_url: str) -> None:
    """``/generate``'s ``allow_fallback`` is optional and defaults to ``None`` (the service decides: another model
    only for the default model), not to the page's tick."""
    info = _client(app_url).view_api(print_info=False, return_format="dict")
    (parameter,) = [
        p for p in info["named_endpoints"]["/generate"]["parameters"] if p["parameter_name"] == "allow_fallback"
    ]
    assert parameter["parameter_has_default"] and parameter["parameter_default"] is None


def test_api_cancel_stops_the_request(app_url: str) -> None:
    """A gradio_client job cancelled during denoising stops its request: the journal files it as cancelled, and the
    next request runs."""
    import httpx

    job = _client(app_url).submit(
        "a long one", "", "kintsugi/tiny-wan-random", 128, 128, 9, 100, 5.0, 1, 8, api_name="/generate"
    )
    correlation_id = None
    deadline = time.monotonic() + 120
    while correlation_id is None or "Denoising" not in job.outputs()[-1][1]:
        assert time.monotonic() < deadline and not job.done()
        if job.outputs():
            correlation_id = re.search(r"Request `([0-9a-f]+)`", job.outputs()[-1][1]).group(1)
        time.sleep(0.2)
    job.cancel()
    while (status := httpx.get(f"{app_url}api/v1/requests/{correlation_id}", timeout=10).json())["status"] in (
        "accepted",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert status["status"] == "cancelled"
    video, _panel = _client(app_url).predict(*ARGS, api_name="/generate")
    assert Path(video).stat().st_size > 0


def test_rest_generate_returns_video_url_and_result(app_url: str) -> None:
    """POST /api/v1/generate answers JSON with a video URL that serves the mp4, and the corrections made."""
    import httpx

    answer = httpx.post(
        app_url + "api/v1/generate",
        json={"prompt": "a boat", "width": 70, "height": 64, "num_frames": 5, "steps": 1, "seed": 2},
        timeout=120,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["request"]["width"] == 64 and any("width 70" in line for line in body["corrections"])
    video = httpx.get(app_url + body["video_url"].lstrip("/"), timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"


def test_rest_invalid_request_answers_the_spec_error_shape(app_url: str) -> None:
    """A bad parameter gives 422 with the spec's error fields (and `fields`, the parameters refused) and the
    parameter named in the message."""
    import httpx

    answer = httpx.post(app_url + "api/v1/generate", json={"prompt": "a boat", "steps": 0}, timeout=60)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert set(error) == SPEC_ERROR_KEYS | {"fields"} and [field["parameter"] for field in error["fields"]] == ["steps"]
    assert error["type"] == "invalid_parameters" and "`steps`" in error["message"]


def test_rest_video_names_cannot_escape_the_output_folder(app_url: str) -> None:
    """Only plain mp4 file names are served; a traversal attempt is a 404, not a file."""
    import httpx

    for name in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "x.txt"):
        assert httpx.get(app_url + f"api/v1/videos/{name}", timeout=10).status_code == 404


def test_event_feed_streams_recovery_attempts_as_sse(app_url: str) -> None:
    """The SSE feed delivers a `recovery_attempt` message, with correlation id and result fields, when a request
    needs recovery (here: a model that cannot be reached)."""
    import json
    import threading

    import httpx

    def fail_one() -> None:
        httpx.post(
            app_url + "api/v1/generate",
            json={"prompt": "a boat", "model_id": "nobody/missing-model", "num_frames": 5, "width": 64, "height": 64},
            timeout=120,
        )

    messages: list[dict] = []
    with httpx.stream("GET", app_url + "api/v1/events", timeout=120) as stream:
        threading.Thread(target=fail_one, daemon=True).start()
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "recovery_attempt":
                messages.append(json.loads(line[6:]))
                break
    message = messages[0]
    assert message["type"] == "recovery_attempt" and message["correlation_id"]
    assert {"success", "strategy", "message", "user_message", "recovery_time", "requires_user_action"} <= set(
        message["data"]
    )


def test_api_models_table_lists_the_embedded_model(app_url: str) -> None:
    """/models returns the Models tab's table, the embedded model first and ready after start-up."""
    table = _client(app_url).predict(api_name="/models")
    rows = table["data"]
    assert rows[0][0] == "kintsugi/tiny-wan-random" and rows[0][1] == "verified"


def test_api_quick_check_of_the_embedded_model_is_clean(app_url: str) -> None:
    """/model_quick_check answers in words that every file is intact."""
    text = _client(app_url).predict("kintsugi/tiny-wan-random", api_name="/model_quick_check")
    assert "intact" in text


def test_api_scenario_runs_for_real_and_reports(app_url: str) -> None:
    """/scenario_invalid_parameters runs the scenario against a real service and returns its row and story."""
    row, video, story = _client(app_url).predict(api_name="/scenario_invalid_parameters")
    assert row["data"][0][0] == "invalid_parameters"
    assert "Fault injected" in story and "`width`" in story


def test_api_metrics_returns_headline_charts_and_recent_attempts(app_url: str) -> None:
    """/metrics returns the headline, six plotly charts and the latest-attempts table."""
    headline, *charts, recent = _client(app_url).predict(api_name="/metrics")
    assert re.search(r"\d+ requests? ran", headline) or "No requests" in headline
    assert len(charts) == 6 and all(chart for chart in charts)
    assert "headers" in recent


@pytest.mark.parametrize("endpoint", ["/model_full_check", "/model_repair", "/model_update", "/model_rollback"])
def test_api_model_actions_answer_in_words(app_url: str, endpoint: str) -> None:
    """Each model action endpoint answers the embedded model in Markdown, never with an exception."""
    text = _client(app_url).predict("kintsugi/tiny-wan-random", api_name=endpoint)
    assert isinstance(text, str) and text.startswith("**") and "Traceback" not in text


@pytest.mark.parametrize(("endpoint", "args"), [("/chaos_inject", ("invalid_parameters",)), ("/chaos_matrix", ())])
def test_api_fault_injection_is_refused_in_words_when_off(app_url: str, endpoint: str, args: tuple) -> None:
    """With KINTSUGI_CHAOS off, the fault-injection endpoints refuse, saying how to turn it on; nothing raw."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        _client(app_url).predict(*args, api_name=endpoint)
    text = str(caught.value)
    assert "Fault injection is off" in text and "KINTSUGI_CHAOS=on" in text
    assert "Traceback" not in text and "/tmp" not in text and ".py" not in text


@pytest.fixture(scope="module")
def hub_app_url(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """The app against a loopback hub that knows no repository: any hub id answers 404 for real."""
    from components.chaos.loopback_hub import HubServer

    with (
        HubServer() as hub,
        running_app(tmp_path_factory.mktemp("hubapp"), tiny_model, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1") as url,
    ):
        yield url


def test_api_download_of_an_unknown_id_says_it_is_not_on_the_hub(hub_app_url: str) -> None:
    """/model_download of foo/bar (404 from the hub) is "not found on the hub — check its id", not a network loss."""
    text = _client(hub_app_url).predict("foo/bar", api_name="/model_download")
    assert "foo/bar was not found on the model hub: check its id" in text
    assert "reach" not in text and "Traceback" not in text


@pytest.mark.parametrize("endpoint", ["/model_quick_check", "/model_download", "/model_rollback"])
def test_api_model_actions_refuse_a_path_for_an_id_naming_the_parameter(hub_app_url: str, endpoint: str) -> None:
    """A traversal id is refused as the invalid `model_id` it is, never as "an unusable result"."""
    text = _client(hub_app_url).predict("../../etc/passwd", api_name=endpoint)
    assert "`model_id` must look like owner/name" in text and "unusable" not in text


def test_api_checks_of_a_model_not_downloaded_say_so(hub_app_url: str) -> None:
    """A quick check of a model that is not here says it is not downloaded, not that it needs another version."""
    text = _client(hub_app_url).predict("foo/bar", api_name="/model_quick_check")
    assert text.startswith("**foo/bar is not downloaded.**") and "version" not in text


def test_api_rollback_with_nothing_kept_says_there_is_nothing(app_url: str) -> None:
    """A rollback with no earlier revision kept says so, not that the model needs a different version."""
    text = _client(app_url).predict("kintsugi/tiny-wan-random", api_name="/model_rollback")
    assert text.startswith("**Nothing to roll back to.**") and "version" not in text.lower().split("revision")[0]


def test_event_feed_streams_queue_and_progress_of_a_rest_request(app_url: str) -> None:
    """A REST request's place in line (`queue`) and each denoising step (`progress`) arrive on the SSE feed under
    their own `event:` lines, as typed messages (`FeedMessage`) naming the request."""
    import json
    import threading
    import uuid

    import httpx
    from pydantic import TypeAdapter

    from components.views import FeedMessage

    key, adapter = uuid.uuid4().hex, TypeAdapter(FeedMessage)
    request = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 1}

    def generate() -> None:
        httpx.post(app_url + "api/v1/generate", json=request, headers={"Idempotency-Key": key}, timeout=120)

    mine: list = []
    with httpx.stream("GET", app_url + "api/v1/events?types=progress,queue", timeout=120) as stream:
        threading.Thread(target=generate, daemon=True).start()
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                message = adapter.validate_python(json.loads(line[6:]))
                assert message.type == event
                if message.correlation_id == key:
                    mine.append(message)
                if any(m.type == "progress" and m.data.step == 2 for m in mine):
                    break
    queue = [m.data for m in mine if m.type == "queue"]
    assert queue and queue[0].position == queue[0].ahead + 1
    steps = [(m.data.phase, m.data.step, m.data.total) for m in mine if m.type == "progress" and m.data.step]
    assert steps == [("denoise", 1, 2), ("denoise", 2, 2)]
    assert any(m.type == "progress" and m.data.step is None and m.data.phase == "load" for m in mine)


def test_the_metrics_timer_runs_only_while_its_tab_is_shown() -> None:
    """The Metrics tab's 15 s refresh starts inactive; selecting any tab sets it (on for Metrics, off for the rest),
    so a tab left on Generate never polls the metrics store."""
    import app

    config = app.demo.config
    (timer,) = [item for item in config["components"] if item["type"] == "timer"]
    assert timer["props"]["active"] is False
    tabs = {item["id"] for item in config["components"] if item["type"] == "tabitem"}
    setters = {
        target
        for dependency in config["dependencies"]
        if timer["id"] in dependency["outputs"]
        for target in dependency["targets"]
    }
    assert setters == {(tab, "select") for tab in tabs}
