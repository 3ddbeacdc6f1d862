"""Suite-wide set-up: offline, quiet environment and the embedded model built once per session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded tiny Wan pipeline, built once into a session folder (read-only by convention)."""
    from components.embedded_model import build_embedded_model

    return build_embedded_model(tmp_path_factory.mktemp("embedded") / "tiny-wan-random")
