"""The studio in a real browser: Debian's Chromium driven by Playwright against `python app.py` started for real.

Screenshots go to a temporary folder; with KINTSUGI_UPDATE_SCREENSHOTS=1 they replace docs/screenshots/ (the
README shows them).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.app_process import ROOT, running_app

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("KINTSUGI_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="kintsugi-shots-"))
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is installed by .ci/run"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """The app with fault injection on (``KINTSUGI_CHAOS=on``): the Scenarios tab shows its controls."""
    with running_app(tmp_path_factory.mktemp("browser"), tiny_model, KINTSUGI_CHAOS="on") as url:
        yield url


@pytest.fixture(scope="module")
def capped_url(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """The app with a 340 MiB worker cap and planning off, so a large request really runs out of memory."""
    with running_app(
        tmp_path_factory.mktemp("capped"),
        tiny_model,
        KINTSUGI_WORKER_MEMORY_CAP="340MiB",
        KINTSUGI_MEMORY_PLANNING="off",
    ) as url:
        yield url


def _page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.get_by_role("button", name="Generate").wait_for()
    return page


def _set_slider(page, label: str, value: int) -> None:
    box = page.get_by_label(f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")


def test_click_generate_plays_a_video(browser, app_url: str) -> None:
    """A click on Generate shows a video element that loads and has a duration."""
    page = _page(browser, app_url)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("video[src]", timeout=60_000)
    page.wait_for_function(
        "() => { const v = document.querySelector('video'); return v && v.readyState >= 1 && v.duration > 0; }",
        timeout=30_000,
    )
    page.wait_for_timeout(300)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "generate.png"), full_page=True)
    assert page.evaluate("() => document.querySelector('video').duration") > 0


def test_invalid_parameter_shows_the_catalogued_message(browser, app_url: str) -> None:
    """An empty prompt ends in an error toast with the plain message naming `prompt`, no raw exception text."""
    page = _page(browser, app_url)
    page.get_by_label("Prompt", exact=True).fill("")
    page.get_by_role("button", name="Generate").click()
    toast = page.locator('[data-testid="toast-body"]').first
    toast.wait_for(timeout=30_000)
    text = toast.inner_text()
    assert "`prompt`" in text or "prompt" in text
    assert "What you can do" in text and "Traceback" not in text


def test_fault_injected_from_the_scenarios_tab_fills_its_row_and_story(browser, app_url: str) -> None:
    """With KINTSUGI_CHAOS=on, "Inject this fault" runs the chosen failure type for real: the table gets its row
    (classified as itself, the strategy tried, the outcome) and the story tells what happened."""
    page = _page(browser, app_url)
    page.get_by_role("tab", name="Scenarios").click()
    page.get_by_role("button", name="Inject this fault").click()
    story = page.locator("#fault-story")
    page.wait_for_function(
        "() => document.querySelector('#fault-story').innerText.includes('model_download_failure')", timeout=90_000
    )
    page.wait_for_timeout(1000)  # the outputs leave their dimmed "pending" look
    page.screenshot(path=str(SHOTS / "fault-injection.png"), full_page=True)
    table = page.locator("#fault-table").inner_text()
    assert "model_download_failure" in table and "immediate_retry" in table and "recovered" in table
    assert "Fault injected" in story.inner_text() and "Traceback" not in story.inner_text()


def test_real_oom_shows_timeline_and_what_we_changed(browser, capped_url: str) -> None:
    """Under a real memory cap, 33×512² fails in the allocator; the page shows the failed attempt, the strategy
    that worked, and the "what we changed" list next to the video."""
    page = _page(browser, capped_url)
    _set_slider(page, "Width", 512)
    _set_slider(page, "Height", 512)
    _set_slider(page, "Frames (4k+1)", 33)
    _set_slider(page, "Steps", 2)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("video[src]", timeout=120_000)
    status = page.locator("#status").inner_text()
    page.screenshot(path=str(SHOTS / "oom-recovered.png"), full_page=True)
    assert "Attempt 1 failed" in status and "vram_exhaustion" in status
    assert "What we changed" in status
    assert "Recovered" in status


def test_metrics_tab_renders_the_charts(browser, capped_url: str) -> None:
    """After the requests above, the Metrics tab draws its plotly charts and the headline counts requests."""
    page = _page(browser, capped_url)
    page.get_by_role("tab", name="Metrics").click()
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=30_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "metrics.png"), full_page=True)
    assert "requests" in page.locator("#metrics-summary").inner_text()
