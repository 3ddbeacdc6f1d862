"""A real full disk under the hub cache (a small tmpfs filled by another writer), before and during a download."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from components.chaos.loopback_hub import HubServer
from components.store.download import BandwidthPolicy, DownloadEvent, DownloadEventKind, RetryPolicy
from components.store.integrity import full_check, hash_blob
from components.store.model_store import ModelStore
from recovery.classify import classify_exception
from recovery.errors import StorageFullError
from recovery.messages import format_bytes
from recovery.taxonomy import EnhancedFailureType
from tests.store.conftest import REPO, WEIGHTS
from tests.support.small_disk import fill, small_disk

OTHER = "kintsugi-test/old-model"
SLACK = 64 * 1024  # one chunk in flight when the disk filled, at most


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: room for both test models (~0.7 MiB each) and little else."""
    with small_disk(tmp_path / "small-disk", "4m") as mount:
        yield mount


@pytest.fixture
def store_on_disk(disk: Path, hub: HubServer, tmp_path: Path, sleeps: list[float], model_v2: Path) -> ModelStore:
    """A store whose hub cache is on the small disk, already holding another model (to be kept intact)."""
    store = ModelStore(
        disk / "hub-cache",
        tmp_path / "state",
        endpoint=hub.url,
        token=False,
        retry=RetryPolicy(attempts=4, base_s=0.5),
        bandwidth=BandwidthPolicy(window_s=0.3),
        reserve_bytes=0,
        sleep=sleeps.append,
    )
    hub.add_revision(OTHER, model_v2)
    store.download(OTHER)
    return store


@pytest.fixture
def crowded(store_on_disk: ModelStore, hub: HubServer, disk: Path) -> ModelStore:
    """The other model moved on to a tiny revision (its old one is detached), then the disk filled to 300 KiB."""
    hub.add_revision(OTHER, {"model_index.json": b"{}", "weights.safetensors": b"\0" * 8})
    store_on_disk.download(OTHER)
    fill(disk, leave=300 * 1024)
    return store_on_disk


def _expected(store: ModelStore) -> int:
    return store.availability.availability(REPO).bytes_expected


def _fill_after(disk: Path, after: int) -> tuple[list[Path], Callable[[DownloadEvent], None]]:
    """An ``on_event`` hook: once ``after`` bytes of the weights arrived, another writer fills the disk."""
    filled: list[Path] = []

    def hook(event: DownloadEvent) -> None:
        if not filled and event.kind is DownloadEventKind.PROGRESS and event.path == WEIGHTS:
            if event.bytes_done > after:
                filled.append(fill(disk))

    return filled, hook


def _other_intact(store: ModelStore) -> bool:
    """Every revision of the other model still in the cache passes the full check (every byte hashed)."""
    for commit in store.cache.read_state(OTHER)["manifests"]:
        manifest = store.cache.manifest(OTHER, commit)
        if manifest is not None and store.cache.snapshot_dir(OTHER, commit).is_dir():
            if not full_check(store.cache, manifest).ok:
                return False
    return True


# -- before the download: the pre-flight ------------------------------------------------------------------------------


def test_preflight_on_a_full_disk_refuses_with_needed_free_and_plan(crowded: ModelStore, disk: Path) -> None:
    """With 300 KiB really free, the pre-flight refuses: bytes needed, bytes free (the disk's), a plan that frees
    enough — all in the error's data and, in readable sizes, in its message."""
    free = shutil.disk_usage(disk).free
    with pytest.raises(StorageFullError) as info:
        crowded.download(REPO)
    error = info.value
    assert (error.bytes_needed, error.bytes_free) == (_expected(crowded), free)
    assert error.plan.sufficient and error.plan.items[0].repo_id == OTHER and error.plan.items[0].refs == ()
    for figure in (error.bytes_needed, free, error.bytes_needed - free, error.plan.bytes_freed):
        assert format_bytes(figure) in str(error)
    assert "enough" in str(error) and str(disk) not in str(error)
    assert classify_exception(error).failure_type is EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT
    assert not (crowded.cache.repo_dir(REPO) / "blobs").exists()


def test_applying_the_preflight_plan_makes_room_for_the_download(crowded: ModelStore) -> None:
    """The plan the refusal carried, applied, really frees the space: the download then fits and verifies."""
    with pytest.raises(StorageFullError) as info:
        crowded.download(REPO)
    crowded.availability.apply_cleanup(info.value.plan)
    result = crowded.download(REPO)
    assert full_check(crowded.cache, crowded.cache.manifest(REPO, result.commit)).ok  # type: ignore[arg-type]
    assert crowded.cache.resolve(OTHER, "main") is not None and _other_intact(crowded)


def test_plan_description_says_when_it_is_not_enough_or_there_is_nothing(crowded: ModelStore) -> None:
    """A plan short of its target says how much is needed; a plan with nothing to offer says so."""
    from components.store.disk import plan_cleanup

    short = plan_cleanup(crowded.cache, 10**12)
    assert f"(not enough: {format_bytes(10**12)} are needed)" in short.describe()
    assert plan_cleanup(crowded.cache, 1, keep={OTHER}).describe() == "nothing in the cache can be deleted to make room"


# -- during the download: another writer takes the space --------------------------------------------------------------


@pytest.fixture
def stopped(store_on_disk: ModelStore, disk: Path) -> tuple[ModelStore, StorageFullError, Path]:
    """A download that passed the pre-flight and hit ENOSPC after 200 kB of the weights (the default: keep)."""
    filled, hook = _fill_after(disk, 200_000)
    with pytest.raises(StorageFullError) as info:
        store_on_disk.download(REPO, on_event=hook)
    assert filled, "the disk was never filled: the download finished first"
    return store_on_disk, info.value, filled[0]


def test_enospc_mid_download_is_storage_space_insufficient(stopped: tuple[ModelStore, StorageFullError, Path]) -> None:
    """The kernel's ENOSPC (the cause) arrives as StorageFullError, classified storage_space_insufficient."""
    _, error, _ = stopped
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == 28
    assert classify_exception(error).failure_type is EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT
    assert error.bytes_free is not None and error.bytes_free < SLACK and error.bytes_needed
    assert "kept" in str(error) and format_bytes(error.bytes_needed) in str(error)


def test_enospc_keeps_the_partial_blob_and_damages_nothing(stopped: tuple[ModelStore, StorageFullError, Path]) -> None:
    """The weights' ``.incomplete`` stays (for resuming); the blobs finished before it and the other model pass
    a full check; no weights blob appears under its final name."""
    store, _, _ = stopped
    kept = store.cache.partial_bytes(REPO)
    assert len(kept) == 1 and next(iter(kept.values())) > 200_000
    manifest = store.downloader.remote_manifest(REPO)
    for entry in manifest.files:
        blob = store.cache.blob_path(REPO, entry.blob_name)
        if entry.path == WEIGHTS:
            assert not blob.exists()
        elif blob.exists():
            assert hash_blob(blob, entry) == (entry.sha256 or entry.blob_id)
    assert _other_intact(store)


def test_next_request_after_freeing_space_resumes(
    stopped: tuple[ModelStore, StorageFullError, Path], hub: HubServer
) -> None:
    """Space freed, the next download fetches only what was missing (Range from the kept bytes), not it all."""
    store, error, filler = stopped
    filler.unlink()
    kept = sum(store.cache.partial_bytes(REPO).values())
    hub.clear()
    result = store.download(REPO)
    served = sum(r.body_bytes for r in hub.fetched())
    assert result.bytes_resumed == kept and served <= error.bytes_needed + SLACK
    assert served < _expected(store) - kept + SLACK
    (weights,) = [r for r in hub.fetched() if r.filename == WEIGHTS]
    assert weights.range == f"bytes={kept}-"
    assert full_check(store.cache, store.cache.manifest(REPO, result.commit)).ok  # type: ignore[arg-type]


@pytest.mark.parametrize("via", ["download", "ensure"])
def test_full_disk_remove_deletes_the_partial_blob_only(
    store_on_disk: ModelStore, disk: Path, hub: HubServer, via: str
) -> None:
    """``full_disk="remove"`` (the user's choice, on ``download`` or ``ensure``) deletes this download's partial
    blob, gives its space back, and leaves the finished blobs and the other model intact."""
    filled, hook = _fill_after(disk, 200_000)
    with pytest.raises(StorageFullError) as info:
        getattr(store_on_disk, via)(REPO, on_event=hook, full_disk="remove")
    assert "deleted" in str(info.value)
    assert store_on_disk.cache.partial_bytes(REPO) == {}
    assert shutil.disk_usage(disk).free > 200_000
    assert _other_intact(store_on_disk)


def test_full_disk_choice_is_checked(store_on_disk: ModelStore) -> None:
    """An unknown ``full_disk`` value is refused naming the parameter and the value, before any transfer."""
    with pytest.raises(ValueError, match=r"`full_disk` must be one of keep, remove \(got 'maybe'\)"):
        store_on_disk.downloader.download(REPO, full_disk="maybe")  # type: ignore[arg-type]
