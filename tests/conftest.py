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
    from components.service import GenerationService
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


@pytest.fixture(scope="session")
def offline_service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    """A started service on a fresh data folder (the embedded model copied from the session's build), shared by
    tests/test_service.py, tests/test_service_cancel.py and the killed-worker test of tests/reliability: one warm
    worker instead of one per module. Tests on it compare counts before and after, never absolute ones.

    The hub is a closed loopback port: a hub model is unreachable at once, as when the network is down. The store
    knows no alternative models (empty catalogue), so such a request cannot be rescued by a fallback."""
    import shutil

    from components.service import GenerationService
    from components.settings import Settings
    from components.store.download import RetryPolicy
    from components.store.model_store import ModelStore
    from tests.support.app_process import free_port

    data_dir = tmp_path_factory.mktemp("service-data")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    store = ModelStore(
        settings.hub_cache_dir,
        settings.store_state_dir,
        endpoint=f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1),
        catalog=(),
    )
    with GenerationService(settings, store=store) as started:
        yield started


@pytest.fixture(scope="session")
def api_app_url(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """``python app.py`` on a free loopback port with its own data folder, the hub a closed port, and a queue of 6
    requests: shared by the API tests (tests/test_app.py), the load test (tests/reliability/test_load.py) and the
    image-to-video tests (tests/test_browser_i2v.py) — one app start and one model load instead of three. Only the
    load test depends on the queue's length."""
    from tests.support.app_process import running_app

    with running_app(tmp_path_factory.mktemp("appdata"), tiny_model, KINTSUGI_QUEUE_SIZE="6") as url:
        yield url
