"""Every model family through the web app's public ``/generate`` endpoint with gradio_client: each tiny model (an
image for the image-to-video ones) ends with an mp4 of the frames and size asked for, made by that model."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import pytest

from components.generation.families import FAMILIES, Family


@pytest.fixture(scope="module")
def start_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("start") / "start.png"
    Image.new("RGB", (96, 64), (200, 60, 30)).save(path)
    return path


@pytest.mark.parametrize("family", FAMILIES, ids=[family.name for family in FAMILIES])
def test_each_familys_tiny_model_makes_its_video_over_gradio_client(
    family: Family, api_app_url: str, start_image: Path
) -> None:
    from gradio_client import Client, handle_file

    side, frames = 64, 2 * family.rules.frame_multiple + 1
    image = handle_file(str(start_image)) if family.needs_image else None
    video, panel = Client(api_app_url, verbose=False).predict(
        "a paper boat", "", family.tiny_model_id, side, side, frames, 2, 5.0, 3, 8, None, image, api_name="/generate"
    )
    with imageio.get_reader(video, format="FFMPEG") as reader:
        shown = list(reader.iter_data())
    assert len(shown) == frames and shown[0].shape == (side, side, 3)
    assert "noise" in panel  # a tiny model's video is labelled as what it is
