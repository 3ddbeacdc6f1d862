"""Image-to-video in the studio, as users and API clients meet it: `python app.py` started for real, the Generate
tab driven in Debian's Chromium with Playwright (upload an image, see it as it will be used, get a video) and the
``/generate`` endpoint driven with gradio_client (an image file in, a video out); and the Generate tab's presets,
which follow the chosen model's family like the start image does."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.generation.test_images import bilevel_png
from tests.support.app_process import ROOT

CHROMIUM = Path("/usr/bin/chromium")
I2V = "kintsugi/tiny-wan-i2v-random"
SHOTS = (  # as tests/test_browser.py: KINTSUGI_UPDATE_SCREENSHOTS=1 replaces the README's
    ROOT / "docs" / "screenshots"
    if os.environ.get("KINTSUGI_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="kintsugi-shots-"))
)
has_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is installed by .ci/run")


@pytest.fixture(scope="module")
def app_url(api_app_url: str) -> str:
    """The session's ``python app.py`` with its default settings (tests/conftest.py), shared with the API tests."""
    return api_app_url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url: str) -> Iterator[object]:
    opened = browser.new_page(viewport={"width": 1280, "height": 1000})
    opened.goto(app_url)
    opened.get_by_role("button", name="Generate", exact=True).wait_for()
    opened.wait_for_timeout(300)  # the load events (model picker, saved settings) have run
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 80×48 JPEG: the page cuts it to the form's 64×64."""
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    Image.new("RGB", (80, 48), (230, 120, 20)).save(path)
    return path


def _small(page) -> None:
    for label, value in {"Width": 64, "Height": 64, "Frames (4k+1)": 5, "Steps": 1}.items():
        box = page.get_by_label(f"number input for {label}", exact=True)
        box.fill(str(value))
        box.press("Enter")


def _choose_model(page, model_id: str) -> None:
    picker = page.locator("#model-picker input")
    picker.fill(model_id)
    picker.press("Enter")
    page.wait_for_timeout(500)


@pytest.mark.browser
@has_chromium
def test_a_text_to_video_model_hides_the_start_image(page) -> None:
    """On the built-in text-to-video model the image field is not shown (an image there would be refused)."""
    assert page.locator("#start-image").count() == 0 or not page.locator("#start-image").is_visible()
    _choose_model(page, "someone/some-model")  # a hub id no family knows: it may take an image
    page.locator("#start-image").wait_for(state="visible", timeout=10_000)
    _choose_model(page, "kintsugi/tiny-wan-random")
    page.locator("#start-image").wait_for(state="hidden", timeout=10_000)


@pytest.mark.browser
@has_chromium
def test_upload_an_image_and_get_a_video(page, photo: Path) -> None:
    """On the image-to-video model: the field says it is required; an upload is shown back as it will be used
    (cut to 64×64) with what was changed; Generate makes a video and the result lists the crop."""
    _small(page)
    _choose_model(page, I2V)
    field = page.locator("#start-image")
    field.wait_for(state="visible", timeout=10_000)
    assert "required" in field.inner_text()
    field.locator("input[type=file]").set_input_files(str(photo))
    page.locator("#image-used img").wait_for(timeout=30_000)
    assert "Start image 80×48 → cropped and resized to 64×64" in page.locator("#image-note").inner_text()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_selector("video[src]", timeout=120_000)
    page.wait_for_function(
        "() => { const v = document.querySelector('video'); return v && v.readyState >= 1 && v.duration > 0; }",
        timeout=30_000,
    )
    status = page.locator("#status").inner_text()
    assert "Start image 80×48 → cropped and resized to 64×64" in status
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "image-to-video.png"), full_page=True)


def test_gradio_client_sends_an_image_and_gets_a_video(app_url: str, photo: Path) -> None:
    """Over gradio_client, ``/generate`` with an image file (``handle_file``) on the image-to-video model ends with
    an mp4, and the result panel lists the crop."""
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    video, panel = client.predict(
        "a paper boat", "", I2V, 64, 64, 5, 1, 5.0, 1, 8, None, handle_file(str(photo)), api_name="/generate"
    )
    assert Path(video).suffix == ".mp4" and Path(video).stat().st_size > 0
    assert "80×48 → cropped and resized to 64×64" in panel


def test_gradio_client_image_on_a_text_to_video_model_is_refused_naming_it(app_url: str, photo: Path) -> None:
    """The same upload on the built-in text-to-video model is refused in words naming the start image, before
    anything runs (no traceback, no path)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        Client(app_url, verbose=False).predict(
            "a paper boat",
            "",
            "kintsugi/tiny-wan-random",
            64,
            64,
            5,
            1,
            5.0,
            1,
            8,
            None,
            handle_file(str(photo)),
            api_name="/generate",
        )
    text = str(caught.value)
    assert "Start image is not taken by kintsugi/tiny-wan-random" in text
    assert "Traceback" not in text and "/tmp" not in text


def test_gradio_client_bomb_is_refused_in_words(app_url: str, tmp_path: Path) -> None:
    """A decompression bomb sent to ``/generate`` reaches our check untouched (gradio does not open it first) and
    is refused in words naming the start image."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bilevel_png(20_000, 20_000))
    arguments = ("a paper boat", "", "someone/some-model", 64, 64, 5, 1, 5.0, 1, 8, None, handle_file(str(bomb)))
    with pytest.raises(AppError) as caught:
        Client(app_url, verbose=False).predict(*arguments, api_name="/generate")
    assert "Start image is too large to decode safely" in str(caught.value)


@pytest.mark.browser
@has_chromium
def test_presets_follow_the_chosen_models_shape_rules(page) -> None:
    """The same preset gives Wan 2.1 sides ÷16 (848×480) and LTX-Video sides ÷32 (864×480): a size each runs as is."""
    width = page.get_by_label("number input for Width", exact=True)
    height = page.get_by_label("number input for Height", exact=True)
    page.get_by_label("Medium (480)").check()
    page.get_by_label("16:9").check()
    page.wait_for_function("() => document.querySelector('[aria-label=\"number input for Width\"]').value === '848'")
    assert height.input_value() == "480"
    _choose_model(page, "kintsugi/tiny-ltx-random")
    page.get_by_label("4:3").check()
    page.get_by_label("16:9").check()
    page.wait_for_function("() => document.querySelector('[aria-label=\"number input for Width\"]').value === '864'")
    assert width.input_value() == "864" and height.input_value() == "480"
