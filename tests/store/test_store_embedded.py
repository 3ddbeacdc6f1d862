"""The embedded tiny Wan goes through the same store: imported, verified, repaired offline, served and loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.chaos.loopback_hub import HubServer
from components.generation.embedded_model import EMBEDDED_MODEL_ID, build_embedded_model
from components.store.availability import ModelStatus
from components.store.model_store import ModelStore

TRANSFORMER = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="session")
def embedded_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_embedded_model(tmp_path_factory.mktemp("embedded") / "tiny-wan")


@pytest.fixture
def local_store(tmp_path: Path, embedded_folder: Path) -> ModelStore:
    """A store whose embedded model 'builds' by copying the session's (deterministic) build."""
    store = ModelStore(tmp_path / "cache", tmp_path / "state", reserve_bytes=0)

    def build(target: Path) -> Path:
        return Path(shutil.copytree(embedded_folder, target))

    store.register_local_source(EMBEDDED_MODEL_ID, build)
    return store


def test_embedded_model_is_imported_into_the_hub_cache(local_store: ModelStore) -> None:
    """Registering the embedded model puts it in the cache under its id, usable and fully verifiable."""
    assert local_store.availability.availability(EMBEDDED_MODEL_ID, check_remote=False).status.usable
    assert local_store.health.verify(EMBEDDED_MODEL_ID).ok
    assert local_store.availability.availability(EMBEDDED_MODEL_ID).status is ModelStatus.VERIFIED


def test_zeroed_embedded_weights_are_repaired_from_the_builder(local_store: ModelStore) -> None:
    """Zeroed weight bytes (which load silently) fail the full check and are rebuilt offline, that file only."""
    snapshot = local_store.ensure(EMBEDDED_MODEL_ID)
    blob = (snapshot / TRANSFORMER).resolve()
    with blob.open("r+b") as f:
        f.seek(-256, os.SEEK_END)
        f.write(b"\0" * 256)
    report = local_store.health.repair(EMBEDDED_MODEL_ID)
    assert report.ok and report.source == "local" and report.files == (TRANSFORMER,)


@pytest.mark.slow
def test_embedded_model_served_by_the_loopback_hub_loads_with_wan_pipeline(
    embedded_folder: Path, tmp_path: Path
) -> None:
    """WanPipeline.from_pretrained(repo_id) downloads the embedded model through HF_ENDPOINT and loads it."""
    with HubServer() as hub:
        commit = hub.add_revision(EMBEDDED_MODEL_ID, embedded_folder)
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        env.pop("HF_HUB_OFFLINE", None)
        code = (
            f"import diffusers; p = diffusers.WanPipeline.from_pretrained({EMBEDDED_MODEL_ID!r});"
            "print(type(p).__name__, type(p.transformer).__name__)"
        )
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["WanPipeline", "WanTransformer3DModel"]
    assert any(r.filename == TRANSFORMER for r in hub.fetched())
    store = ModelStore(tmp_path / "hf-home" / "hub", tmp_path / "state")
    assert store.health.verify(EMBEDDED_MODEL_ID).ok and store.cache.resolve(EMBEDDED_MODEL_ID, "main") == commit
