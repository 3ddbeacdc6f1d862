"""Suite-wide set-up: offline, quiet environment and the embedded model built once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest

import recovery

if TYPE_CHECKING:
    from tests.support.shared_runs import SharedRuns


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """Every test runs with the retry backoff off (``recovery.set_testing``) and leaves the switch as it found it;
    a test about the backoff itself turns it back on inside its own ``with recovery.set_testing(False)``."""
    with recovery.set_testing(True):
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded tiny Wan pipeline, built once into a session folder (read-only by convention)."""
    from components.generation.embedded_model import build_embedded_model

    return build_embedded_model(tmp_path_factory.mktemp("embedded") / "tiny-wan-random")


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRuns]:
    """The scenarios and chaos faults, each run once for the session (tiny model, warm workers)."""
    from components.chaos.injectors import ChaosBench
    from tests.support.shared_runs import SharedRuns

    with ChaosBench(tmp_path_factory.mktemp("shared-runs")) as bench:
        yield SharedRuns(bench)
