"""The studio in a real browser: Debian's Chromium driven by Playwright against `python app.py` started for real.

Screenshots go to a temporary folder; with KINTSUGI_UPDATE_SCREENSHOTS=1 they replace docs/screenshots/ (the
README shows them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tempfile
import time
import urllib.request
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


SPARE = "kintsugi-test/spare-model"


def _cached_model(hub_cache: Path, repo_id: str, payload: bytes) -> Path:
    """A model in the Hugging Face cache's own layout (blob, snapshot link, ref), as a finished download leaves it."""
    folder = hub_cache / f"models--{repo_id.replace('/', '--')}"
    blob = folder / "blobs" / hashlib.sha256(payload).hexdigest()
    commit = hashlib.sha1(payload).hexdigest()
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(payload)
    (snapshot / "weights.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return blob


@pytest.fixture(scope="module")
def spare_blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data folder of the shared app, with a second model (not the default, not in use) in its hub cache."""
    data = tmp_path_factory.mktemp("browser")
    return _cached_model(data / "hub", SPARE, b"\0" * 300_000)


@pytest.fixture(scope="module")
def app_data(spare_blob: Path) -> Path:
    return spare_blob.parents[3]


@pytest.fixture(scope="module")
def app_url(app_data: Path, tiny_model: Path) -> Iterator[str]:
    """The app with fault injection on (``KINTSUGI_CHAOS=on``): the Scenarios tab shows its controls. Its worker is
    capped at 340 MiB with memory planning on: the form's requests run as asked, 33×512² gets the plan notice."""
    with running_app(app_data, tiny_model, KINTSUGI_CHAOS="on", KINTSUGI_WORKER_MEMORY_CAP="340MiB") as url:
        yield url


@pytest.fixture(scope="module")
def capped_url(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """The app with a 340 MiB worker cap and planning off, so a large request really runs out of memory. Its worker
    runs one compute thread (``OMP_NUM_THREADS=1``, as in tests/test_service_progress.py): on a CPU shared with
    other processes OpenMP's spinning threads make step times swing several-fold, and the ETA check run here is
    about the time model, not the neighbours."""
    with running_app(
        tmp_path_factory.mktemp("capped"),
        tiny_model,
        KINTSUGI_WORKER_MEMORY_CAP="340MiB",
        KINTSUGI_MEMORY_PLANNING="off",
        OMP_NUM_THREADS="1",
    ) as url:
        yield url


_OPEN_PAGES: list = []


@pytest.fixture(autouse=True)
def _close_pages() -> Iterator[None]:
    """Each test's tabs are closed when it ends: an open tab keeps its streams and its Metrics timer calling the
    app, which would slow every later test and the app's shutdown."""
    yield
    while _OPEN_PAGES:
        page = _OPEN_PAGES.pop()
        if not page.is_closed():
            page.close()


def _page(browser, url: str, width: int = 1280, height: int = 900):
    page = browser.new_page(viewport={"width": width, "height": height})
    _OPEN_PAGES.append(page)
    page.goto(url)
    page.get_by_role("button", name="Generate", exact=True).wait_for()
    page.wait_for_timeout(300)  # the load events (model picker, saved settings) have run
    return page


def _set_slider(page, label: str, value: int) -> None:
    box = page.get_by_label(f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")


def _small(page, **values: int) -> None:
    """A request small enough to take seconds: 64×64, 5 frames, 1 step unless told otherwise."""
    for label, value in {"Width": 64, "Height": 64, "Frames (4k+1)": 5, "Steps": 1, **values}.items():
        _set_slider(page, label, value)


def _slider_value(page, label: str) -> str:
    return page.get_by_label(f"number input for {label}", exact=True).input_value()


def _request_status(url: str, correlation_id: str) -> dict:
    with urllib.request.urlopen(f"{url}api/v1/requests/{correlation_id}", timeout=10) as answer:
        return json.load(answer)


def _running_request(page) -> str:
    """Wait for denoising to be under way; the request id the progress panel shows."""
    page.wait_for_function(
        "() => /step [1-9]\\d*\\/100/.test(document.querySelector('#progress-panel').innerText)", timeout=90_000
    )
    return page.locator("#progress-panel code").inner_text()


def _wait_ended(url: str, correlation_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while (status := _request_status(url, correlation_id))["status"] in ("accepted", "running"):
        assert time.monotonic() < deadline, f"request {correlation_id} still {status['status']}"
        time.sleep(0.5)
    return status


def test_click_generate_plays_a_video(browser, app_url: str) -> None:
    """At 1280×900 Generate is in view without scrolling; a click shows a video that loads and has a duration."""
    page = _page(browser, app_url)
    button = page.get_by_role("button", name="Generate", exact=True)
    box = button.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 900
    button.click()
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
    """An empty prompt ends in a formatted toast naming the Prompt field, with steps: no raw Markdown, no claim of
    corrections that were not made, no raw exception text."""
    page = _page(browser, app_url)
    page.get_by_label("Prompt", exact=True).fill("")
    page.get_by_role("button", name="Generate", exact=True).click()
    toast = page.locator('[data-testid="toast-body"]').first
    toast.wait_for(timeout=30_000)
    text = toast.inner_text()
    assert "Prompt must not be empty" in text and "What you can do" in text
    assert "**" not in text and "corrected what we could" not in text and "Traceback" not in text
    assert toast.locator("strong").count() >= 1


def test_a_prompt_over_the_limit_is_counted_and_refused_with_a_notice(browser, app_url: str) -> None:
    """2050 characters: the counter says 50 too many, and Generate is refused in words, not cut silently."""
    page = _page(browser, app_url)
    page.get_by_label("Prompt", exact=True).fill("x" * 2050)
    page.wait_for_function("() => document.querySelector('#prompt-counter').innerText.includes('50 too many')")
    page.get_by_role("button", name="Generate", exact=True).click()
    toast = page.locator('[data-testid="toast-body"]').first
    toast.wait_for(timeout=30_000)
    assert "Prompt must be at most 2000 characters" in toast.inner_text()
    assert len(page.get_by_label("Prompt", exact=True).input_value()) == 2050


@pytest.mark.parametrize("how", ["button", "Escape"])
def test_stop_during_denoise_frees_the_worker(browser, app_url: str, how: str) -> None:
    """Stop (the button, or Esc) during denoising ends that request as stopped, and the next request starts at
    once and delivers."""
    page = _page(browser, app_url)
    _set_slider(page, "Steps", 100)
    page.get_by_role("button", name="Generate", exact=True).click()
    stopped = _running_request(page)
    if how == "button":
        page.get_by_role("button", name="Stop", exact=True).click()
    else:
        page.keyboard.press("Escape")
    page.wait_for_function("() => document.querySelector('#progress-panel').innerText.includes('Stopped')")
    status = _wait_ended(app_url, stopped)
    assert status["status"] == "cancelled"
    _small(page)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=60_000)
    assert "Done" in page.locator("#progress-panel").inner_text()


def test_stop_during_decode_frees_the_worker(browser, app_url: str) -> None:
    """Esc while the frames are decoded (49×128², a third of the job or more) stops the request before the next
    decoder chunk: filed as cancelled, no video, and the next request delivers."""
    page = _page(browser, app_url)
    _small(page, **{"Width": 128, "Height": 128, "Frames (4k+1)": 49})
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function(
        """() => { const bar = document.querySelector('#progress-panel progress[aria-label="Decoding frames"]');
                   return bar !== null && bar.value > 0 && bar.value < 1; }""",
        timeout=90_000,
    )
    stopped = page.locator("#progress-panel code").inner_text()
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.querySelector('#progress-panel').innerText.includes('Stopped')")
    assert _wait_ended(app_url, stopped)["status"] == "cancelled"
    assert page.locator("video[src]").count() == 0
    _small(page)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=60_000)


def test_closing_the_tab_cancels_its_request(browser, app_url: str) -> None:
    """A tab closed while its video is made cancels that request: the journal files it as cancelled (not running,
    not failed)."""
    page = _page(browser, app_url)
    _set_slider(page, "Steps", 100)
    page.get_by_role("button", name="Generate", exact=True).click()
    abandoned = _running_request(page)
    page.close()
    assert _wait_ended(app_url, abandoned)["status"] == "cancelled"


def test_ctrl_enter_generates(browser, app_url: str) -> None:
    """Ctrl+Enter in the prompt starts a generation, as the Generate button does."""
    page = _page(browser, app_url)
    _small(page)
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    page.wait_for_selector("video[src]", timeout=60_000)


def test_corrections_are_written_back_to_the_form_and_listed(browser, app_url: str) -> None:
    """Width 100, 10 frames, 0 steps and seed −5 run as 96, 9, 1 and a drawn seed: the inputs show those values
    and each correction is listed in form words."""
    page = _page(browser, app_url)
    page.get_by_label("Prompt", exact=True).fill("a red kite over the sea")
    _small(page, **{"Width": 100, "Frames (4k+1)": 10, "Steps": 0})
    page.get_by_label("Seed (-1 = random)").fill("-5")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=60_000)
    assert (_slider_value(page, "Width"), _slider_value(page, "Frames (4k+1)"), _slider_value(page, "Steps")) == (
        "96",
        "9",
        "1",
    )
    seed = page.get_by_label("Seed (-1 = random)").input_value()
    status = page.locator("#status").inner_text()
    assert int(seed) >= 0 and f"seed {seed}" in status
    for line in ("Width 100 → 96", "Frames 10 → 9", "Steps 0 → 1", f"Seed chosen at random: {seed}"):
        assert line in status
    assert "num_frames" not in status


def test_last_settings_come_back_after_a_reload(browser, app_url: str) -> None:
    """The settings of the last run are kept in the browser: a reload shows them again, not the defaults."""
    page = _page(browser, app_url)
    _small(page, Width=128)
    page.get_by_label("Prompt", exact=True).fill("kept across reloads")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=60_000)
    page.wait_for_timeout(500)  # the settings are saved after the run
    page.reload()
    page.get_by_role("button", name="Generate", exact=True).wait_for()
    page.wait_for_function(
        "() => document.querySelector('#prompt textarea').value === 'kept across reloads'", timeout=10_000
    )
    assert _slider_value(page, "Width") == "128" and _slider_value(page, "Steps") == "1"


def test_history_lists_a_finished_video_and_reuse_fills_the_form(browser, app_url: str) -> None:
    """The History tab shows a video made through the API with its prompt; "Reuse settings" puts its prompt and
    size back in the Generate form and shows that tab."""
    answer = urllib.request.urlopen(
        urllib.request.Request(
            app_url + "api/v1/generate",
            data=json.dumps(
                {"prompt": "a red kite over the sea", "width": 96, "height": 64, "num_frames": 5, "steps": 1}
            ).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=120,
    )
    assert answer.status == 200
    page = _page(browser, app_url)
    page.get_by_role("tab", name="History").click()
    page.wait_for_selector("#history-gallery video, #history-gallery img", timeout=30_000)
    page.locator("#history-gallery button.thumbnail-item").filter(has_text="red kite").first.click()
    page.wait_for_function("() => document.querySelector('#history-details').innerText.includes('red kite')")
    page.locator("#download-video").wait_for(state="visible", timeout=10_000)
    page.keyboard.press("Escape")  # close the gallery's preview, for the screenshot
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "history.png"), full_page=True)
    page.get_by_role("button", name="Reuse settings").click()
    page.wait_for_function(
        "() => document.querySelector('#prompt textarea').value === 'a red kite over the sea'", timeout=10_000
    )
    assert _slider_value(page, "Width") == "96" and page.get_by_role("button", name="Generate", exact=True).is_visible()


def test_cleanup_never_lists_the_default_model_and_asks_before_deleting(
    browser, app_url: str, spare_blob: Path
) -> None:
    """Asked to free everything, the clean-up lists the spare model but never the default one; deleting asks first,
    naming the bytes, and only the confirmation deletes."""
    page = _page(browser, app_url)
    page.get_by_role("tab", name="Models").click()
    page.get_by_text("Disk clean-up").click()
    page.get_by_label("Space to free (GB)").fill("1000")
    page.locator("#cleanup-preview").click()
    page.wait_for_function("() => document.querySelector('#cleanup-table').innerText.includes('spare-model')")
    table = page.locator("#cleanup-table").inner_text()
    assert "tiny-wan-random" not in table
    page.locator("#cleanup-delete").click()
    question = page.locator("#cleanup-question")
    question.wait_for()
    assert "KiB" in question.inner_text() and "free" in question.inner_text()
    assert spare_blob.is_file()
    page.screenshot(path=str(SHOTS / "cleanup-confirm.png"), full_page=True)
    page.locator("#cleanup-yes").click()
    page.wait_for_function("() => document.querySelector('#model-report').innerText.includes('Freed')")
    assert not spare_blob.exists()


def test_phone_width_shows_the_result_in_view_in_a_bounded_player(browser, app_url: str) -> None:
    """At 390×844 a tall 96×256 video scrolls into view after Generate, kept within the screen's height."""
    page = _page(browser, app_url, 390, 844)
    _small(page, **{"Width": 96, "Height": 256})
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=60_000)
    page.wait_for_function("() => document.querySelector('video').readyState >= 1", timeout=30_000)
    page.wait_for_timeout(500)
    box = page.locator("#result-video video").bounding_box()
    assert box is not None and box["height"] <= 844 * 0.62
    assert 0 <= box["y"] and box["y"] + box["height"] / 2 <= 844
    page.screenshot(path=str(SHOTS / "phone.png"))


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
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=120_000)
    status = page.locator("#status").inner_text()
    page.screenshot(path=str(SHOTS / "oom-recovered.png"), full_page=True)
    assert "Attempt 1 failed" in status and "Not enough memory" in status and "vram_exhaustion" in status
    assert "What we changed" in status
    assert "Recovered" in status


# At this size the last 30 of 40 steps and the decoding take about 15 s on a CPU: long enough that a second of load
# from another process, or the page's own latency, is a small part of the time measured.
ETA_JOB = {"Width": 256, "Height": 256, "Frames (4k+1)": 17}
_ETA = re.compile(r"about (?:(\d+) min )?(\d+(?:\.\d+)?) s left")
_STEP = re.compile(r"step (\d+)/40")

# Every change of the progress panel, with the page's clock, from the moment this is run: what the user saw, when.
_WATCH_PANEL = """() => {
    const panel = document.querySelector('#progress-panel'), log = [];
    if (window.panelWatch) window.panelWatch.disconnect();
    window.panelLog = log;
    window.panelWatch = new MutationObserver(() => log.push([performance.now(), panel.innerText]));
    window.panelWatch.observe(panel, {subtree: true, childList: true, characterData: true});
}"""
# The run started since the watch began (the panel changed to something other than a finished run's "Done …")
# and has ended (a "Done …" after that).
_RUN_ENDED = """() => {
    const log = window.panelLog, started = log.findIndex(([, text]) => !text.includes('Done'));
    return started >= 0 && log.slice(started).some(([, text]) => text.includes('Done'));
}"""


def _seconds_left(text: str) -> float | None:
    """The attempt's ETA the panel shows ("about 12.3 s left", "about 2 min 5 s left"), ``None`` without one."""
    found = _ETA.search(text)
    return None if found is None else int(found.group(1) or 0) * 60 + float(found.group(2))


def test_the_eta_shown_on_a_40_step_job_is_within_half_of_the_real_time(browser, capped_url: str) -> None:
    """Once runs have taught the time model (a small one that loads the model, then the job's size with 8 steps),
    the ETA the panel shows at step 10 of a 40-step job is within 50 % of the time the run then really took to
    "Done", both read from the page's own clock at the moments the panel changed."""
    page = _page(browser, capped_url)
    for values in ({}, {**ETA_JOB, "Steps": 8}, {**ETA_JOB, "Steps": 40}):
        _small(page, **values)
        page.evaluate(_WATCH_PANEL)
        page.get_by_role("button", name="Generate", exact=True).click()
        page.wait_for_function(_RUN_ENDED, timeout=180_000)
    log: list[tuple[float, str]] = page.evaluate("() => window.panelLog")
    at, text, step = next((at, text, int(m[1])) for at, text in log if (m := _STEP.search(text)) and int(m[1]) >= 10)
    done_at = next(later for later, later_text in log if later > at and "Done" in later_text)
    eta, real = _seconds_left(text), (done_at - at) / 1000
    assert eta is not None, f"no ETA shown: {text!r}"
    assert abs(eta - real) <= 0.5 * real, f"ETA {eta:.1f} s at step {step}/40, real {real:.1f} s"
    print(f"\neta: {eta:.1f} s shown at step {step}/40, {real:.1f} s real")


def test_metrics_tab_renders_the_charts(browser, capped_url: str) -> None:
    """After the requests above, the Metrics tab draws its plotly charts and the headline counts requests."""
    page = _page(browser, capped_url)
    page.get_by_role("tab", name="Metrics").click()
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=30_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "metrics.png"), full_page=True)
    assert re.search(r"\d+ requests? ran", page.locator("#metrics-summary").inner_text())


UNKNOWN = "nobody/unknown-model"


def _name_model(page, model_id: str) -> None:
    """Type a model id into the Model picker, as a user names a hub model."""
    picker = page.locator("#model-picker input")
    picker.fill(model_id)
    picker.press("Enter")
    page.wait_for_timeout(300)


def test_a_named_model_is_not_replaced_without_permission(browser, app_url: str) -> None:
    """ "Allow another model" is ticked for the default model and unticked once the user names another; with the hub
    unreachable that model's own message ends the request, with the step to allow another model, and no video."""
    page = _page(browser, app_url)
    box = page.get_by_label("Allow another model")
    assert box.is_checked()
    _small(page)
    _name_model(page, UNKNOWN)
    assert not box.is_checked()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('What you can do')", timeout=120_000
    )
    status = page.locator("#status").inner_text()
    assert "The model server cannot be reached" in status and "tick “Allow another model”" in status
    assert "Made with" not in status and page.locator("video[src]").count() == 0


def test_with_permission_the_banner_names_both_models(browser, app_url: str) -> None:
    """The same named model with the box ticked: the built-in model stands in, and the banner above the video's
    details says "Made with <built-in> instead of <named>"."""
    page = _page(browser, app_url)
    _small(page)
    _name_model(page, UNKNOWN)
    page.get_by_label("Allow another model").check()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=120_000)
    status = page.locator("#status").inner_text()
    banner, _details = status.split(" frames · ", 1)
    assert f"Made with kintsugi/tiny-wan-random instead of {UNKNOWN}" in banner


def _journaled(data: Path) -> int:
    with sqlite3.connect(f"file:{data / 'journal.sqlite'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


def _large(page) -> None:
    """33 frames at 512×512: over the test app's 340 MiB cap."""
    _small(page, Width=512, Height=512, **{"Frames (4k+1)": 33})


def test_the_planned_down_notice_comes_before_the_run(browser, app_url: str, app_data: Path) -> None:
    """A request over the cap shows the notice with each choice's predicted memory and time and starts nothing (no
    journal entry, no timeline); "Fewer frames instead" then runs fewer frames, marked as a changed result."""
    page = _page(browser, app_url)
    _large(page)
    before = _journaled(app_data)
    page.get_by_role("button", name="Generate", exact=True).click()
    notice = page.locator("#plan-notice-message")
    notice.wait_for(state="visible", timeout=30_000)
    assert "Nothing has started yet" in notice.inner_text()
    for words in ("Fewer frames instead", "Lower resolution instead", "Run anyway"):
        label = page.get_by_role("button", name=words).inner_text()
        assert "MiB" in label and ("time unknown" in label or "about" in label)
    assert page.get_by_role("button", name="Cancel", exact=True).is_visible()
    page.wait_for_timeout(500)
    assert _journaled(app_data) == before and page.locator("#status").inner_text().strip() == ""
    assert "request" not in page.locator("#progress-panel").inner_text()
    page.screenshot(path=str(SHOTS / "plan-notice.png"), full_page=True)
    page.get_by_role("button", name="Fewer frames instead").click()
    page.wait_for_selector("video[src]", timeout=180_000)
    assert notice.is_hidden()
    status = page.locator("#status").inner_text()
    banner, _details = status.split(" frames · ", 1)
    frames = int(banner.rsplit("\n", 1)[-1])
    # (the choice is the most frames predicted to fit; should the prediction be short, recovery lowers it further)
    assert frames < 33 and "Memory plan (your choice at the memory notice): Frames 33 → " in status
    assert "Changed result" in banner and "33 frames at 512×512 → " in banner
    assert _journaled(app_data) == before + 1


def test_cancel_at_the_notice_runs_nothing(browser, app_url: str, app_data: Path) -> None:
    """ "Cancel" at the notice: the notice goes away, a line says nothing ran, and nothing was journaled."""
    page = _page(browser, app_url)
    _large(page)
    before = _journaled(app_data)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#plan-notice-message").wait_for(state="visible", timeout=30_000)
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator("#plan-notice-message").wait_for(state="hidden", timeout=10_000)
    assert "nothing ran" in page.locator("#status").inner_text()
    assert _journaled(app_data) == before and page.locator("video[src]").count() == 0
