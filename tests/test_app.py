"""The web app as users and API clients meet it: `python app.py` started for real, driven over HTTP and in Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """``python app.py`` on a free loopback port with its own data folder; the URL once it answers."""
    data_dir = tmp_path_factory.mktemp("appdata")
    shutil.copytree(tiny_model, data_dir / "models" / "tiny-wan-random")
    port = _free_port()
    env = {**os.environ, "KINTSUGI_DATA_DIR": str(data_dir), "KINTSUGI_HUB_CACHE_DIR": str(data_dir / "hub"),
           "GRADIO_SERVER_PORT": str(port), "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}",
           "KINTSUGI_DEVICE": "cpu"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            assert process.poll() is None, "app.py exited during start-up"
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("app.py did not answer within 90 s")
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


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
    """A request for a model that cannot be had fails with the plain-language message, no traceback or path."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        _client(app_url).predict(*ARGS[:2], "nobody/missing-model", *ARGS[3:], api_name="/generate")
    text = str(caught.value)
    assert "What you can do" in text
    assert "Traceback" not in text and "/tmp" not in text and ".py" not in text


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is installed by .ci/run")
def test_click_generate_plays_a_video_in_chromium(app_url: str) -> None:
    """In a real browser, a click on Generate shows a video element that loads and has a duration."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("video[src]", timeout=60_000)
        page.wait_for_function("() => { const v = document.querySelector('video'); "
                               "return v && v.readyState >= 1 && v.duration > 0; }", timeout=30_000)
        duration = page.evaluate("() => document.querySelector('video').duration")
        page.wait_for_timeout(500)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "generate.png"), full_page=True)
        browser.close()
    assert duration > 0
