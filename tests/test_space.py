"""The repository is a ready Hugging Face Space: front matter, entry point, requirements."""

from __future__ import annotations

from pathlib import Path

import gradio
import tomllib
from huggingface_hub import SpaceCard

ROOT = Path(__file__).resolve().parent.parent


def test_readme_front_matter_is_a_gradio_space_running_app_py() -> None:
    """SpaceCard parses the README's front matter: Gradio SDK at the installed version, app.py as entry point."""
    card = SpaceCard.load(ROOT / "README.md")
    assert card.data.sdk == "gradio"
    assert card.data.app_file == "app.py" and (ROOT / card.data.app_file).is_file()
    assert card.data.sdk_version == gradio.__version__
    assert card.data.models and card.data.suggested_hardware


def test_space_requirements_match_the_package_dependencies() -> None:
    """requirements.txt (what a Space installs) lists exactly pyproject's runtime dependencies."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == declared
