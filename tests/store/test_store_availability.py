"""Availability answers with sizes, and the store shares the hub client's cache layout both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants, snapshot_download

from components.chaos.loopback_hub import HubServer
from components.store.availability import ModelStatus
from components.store.model_store import ModelStore
from tests.store.conftest import REPO


def test_missing_model_reports_the_hub_sizes(store: ModelStore, hub: HubServer) -> None:
    """A model only on the hub is MISSING with the bytes a download needs."""
    state = store.availability.availability(REPO)
    assert state.status is ModelStatus.MISSING
    assert (
        state.bytes_expected
        == state.bytes_missing
        == sum(len(hub.file_bytes(REPO, p)) for p in hub.repos[REPO].commits[state.commit or ""])
    )


def test_offline_missing_model_does_not_ask_the_hub(
    store: ModelStore, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, a model not in the cache is MISSING and no request is made."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert store.availability.availability(REPO).status is ModelStatus.MISSING and not hub.log


def test_downloaded_model_is_verified(store: ModelStore) -> None:
    """Every blob is hashed before it is moved in place, so a fresh download counts as verified."""
    store.download(REPO)
    state = store.availability.availability(REPO)
    assert state.status is ModelStatus.VERIFIED and state.bytes_missing == 0


def test_a_blob_rewritten_since_verification_is_found_corrupt(store: ModelStore) -> None:
    """Rewriting a blob (same size) changes its record since verification: availability hashes it again and
    reports the revision corrupt, naming the file, before anything loads it."""
    store.download(REPO)
    snapshot = store.cache.snapshot_dir(REPO, store.cache.resolve(REPO, "main") or "")
    config = (snapshot / "scheduler" / "scheduler_config.json").resolve()
    config.write_bytes(config.read_bytes().replace(b"3.0", b"4.0"))
    state = store.availability.availability(REPO)
    assert state.status is ModelStatus.CORRUPT and state.bad_files == ("scheduler/scheduler_config.json",)
    assert not store.health.verify(REPO).ok


def test_store_download_loads_with_the_hub_client_offline(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the store downloads is found by snapshot_download(local_files_only) at the same snapshot path."""
    result = store.download(REPO)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    path = snapshot_download(REPO, cache_dir=store.cache.cache_dir, local_files_only=True)
    assert Path(path) == result.snapshot


def test_hub_client_download_is_seen_and_fully_checkable(store: ModelStore, hub: HubServer) -> None:
    """A model fetched by snapshot_download is PRESENT_UNVERIFIED here and its full check passes."""
    snapshot_download(REPO, cache_dir=store.cache.cache_dir, endpoint=hub.url, token=False)
    assert store.availability.availability(REPO).status is ModelStatus.PRESENT_UNVERIFIED
    report = store.health.verify(REPO)
    assert report.ok and report.files_checked == len(hub.repos[REPO].commits[report.commit])
    assert store.availability.availability(REPO).status is ModelStatus.VERIFIED
