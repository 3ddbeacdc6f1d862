"""A real full disk under the store's own state files (manifests, verified revisions, update switches): a small
tmpfs holding only the state folder, filled by another writer, while the hub cache has room."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.chaos.loopback_hub import HubServer
from components.store.download import DownloadEvent, DownloadEventKind, RetryPolicy
from components.store.integrity import full_check
from components.store.model_store import ModelStore
from recovery.classify import classify_exception
from recovery.errors import StorageFullError
from recovery.taxonomy import EnhancedFailureType
from tests.store.conftest import REPO, WEIGHTS
from tests.support.small_disk import fill, small_disk

OTHER = "kintsugi-test/old-model"


@pytest.fixture
def full_state(hub: HubServer, tmp_path: Path, sleeps: list[float], model_v2: Path) -> Iterator[tuple]:
    """A store whose state folder is on a 1 MiB tmpfs, holding one verified model; while the next model's weights
    arrive (the cache has room), another writer fills the state disk, so recording the download fails."""
    with small_disk(tmp_path / "state-disk", "1m") as disk:
        store = ModelStore(
            tmp_path / "hub-cache",
            disk / "state",
            endpoint=hub.url,
            token=False,
            retry=RetryPolicy(attempts=2, base_s=0.01),
            reserve_bytes=0,
            sleep=sleeps.append,
        )
        hub.add_revision(OTHER, model_v2)
        store.download(OTHER)
        before = {p.name: p.read_bytes() for p in (disk / "state").glob("*.json")}
        filled: list[Path] = []

        def fill_once(event: DownloadEvent) -> None:
            if not filled and event.kind is DownloadEventKind.PROGRESS and event.path == WEIGHTS:
                filled.append(fill(disk))

        with pytest.raises(StorageFullError) as caught:
            store.download(REPO, on_event=fill_once)
        assert filled, "the state disk was never filled"
        yield store, caught.value, before, disk, filled[0]


def test_a_full_state_disk_is_storage_space_insufficient(full_state: tuple) -> None:
    """The state write's ENOSPC reaches the caller as StorageFullError saying what was kept, classified as a full
    disk (not as a broken download)."""
    _, error, *_ = full_state
    assert isinstance(error, StorageFullError) and error.__cause__.errno == errno.ENOSPC
    assert classify_exception(error).failure_type is EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT
    assert "record was not changed" in str(error) and "already downloaded are kept" in str(error)


def test_a_full_state_disk_loses_nothing_recorded_and_leaves_no_half_file(full_state: tuple) -> None:
    """The other model's state is byte for byte what it was and still verifies; no temporary file is left."""
    store, _, before, disk, _ = full_state
    after = {p.name: p.read_bytes() for p in (disk / "state").glob("*.json")}
    assert {name: after.get(name) for name in before} == before
    for body in after.values():
        json.loads(body)
    assert sorted(p.name for p in (disk / "state").iterdir() if not p.name.endswith((".json", ".lock"))) == []
    commit = next(iter(store.cache.read_state(OTHER)["manifests"]))
    manifest = store.cache.manifest(OTHER, commit)
    assert manifest is not None and full_check(store.cache, manifest).ok


def test_once_space_is_freed_the_model_verifies_without_downloading_again(full_state: tuple, hub: HubServer) -> None:
    """The weights had arrived in the cache when recording failed: once the other writer's file is gone, the next
    download finds them there (verified by hash) and only records — nothing is fetched twice."""
    store, _, _, _, filler = full_state
    filler.unlink()
    hub.clear()
    store.download(REPO)
    assert store.availability.availability(REPO, check_remote=False).status.usable
    assert not [r for r in hub.fetched() if r.filename and r.filename.endswith(".safetensors")]
