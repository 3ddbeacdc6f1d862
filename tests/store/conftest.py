"""Fixtures for the model-store tests: a small model folder, a loopback hub serving it, a store pointed at it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from safetensors.numpy import save_file

from components.chaos.loopback_hub import HubServer
from components.store.download import BandwidthPolicy, CancelToken, DownloadEvent, DownloadEventKind, RetryPolicy
from components.store.model_store import ModelStore
from recovery.errors import GenerationCancelledError

REPO = "kintsugi-test/tiny-video"
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


def stop_download_midway(store: ModelStore, repo: str = REPO) -> int:
    """Cancel a real download of ``repo`` once 300 kB of the weights arrived; returns the bytes kept for it."""
    token = CancelToken()

    def cancel_midway(event: DownloadEvent) -> None:
        if event.path == WEIGHTS and event.kind is DownloadEventKind.PROGRESS and event.bytes_done > 300_000:
            token.cancel()

    with pytest.raises(GenerationCancelledError):
        store.download(repo, on_event=cancel_midway, cancel=token)
    return sum(store.cache.partial_bytes(repo).values())


def make_model_folder(root: Path, seed: int) -> Path:
    """A diffusers-shaped folder: configs plus safetensors weights (~600 KB), deterministic per seed."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.35.0",
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=1))
    for part, shapes in {
        "transformer": {"blocks.0.weight": (256, 384), "blocks.1.weight": (256, 192)},
        "vae": {"decoder.weight": (128, 256)},
    }.items():
        (root / part).mkdir(exist_ok=True)
        (root / part / "config.json").write_text(json.dumps({"_class_name": index[part][1], "seed": seed}))
        tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
        save_file(tensors, str(root / part / "diffusion_pytorch_model.safetensors"))
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"shift": 3.0}))
    return root


@pytest.fixture(scope="session")
def model_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("model-v1"), seed=1)


@pytest.fixture(scope="session")
def model_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("model-v2"), seed=2)


@pytest.fixture(autouse=True)
def hub_client_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Short client timeouts, small chunks (so progress and cancellation are fine-grained), no Xet, online."""
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub(model_v1: Path) -> Iterator[HubServer]:
    with HubServer() as server:
        server.add_revision(REPO, model_v1)
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    """Backoff delays the store asked for (recorded, not slept)."""
    return []


@pytest.fixture
def store(hub: HubServer, tmp_path: Path, sleeps: list[float]) -> ModelStore:
    return ModelStore(
        tmp_path / "hub-cache",
        tmp_path / "state",
        endpoint=hub.url,
        token=False,
        retry=RetryPolicy(attempts=4, base_s=0.5),
        bandwidth=BandwidthPolicy(window_s=0.3),
        reserve_bytes=0,
        sleep=sleeps.append,
    )
