"""The model store: availability, downloads, integrity, repair, disk, versions and fallbacks on the HF cache.

``ModelStore`` bundles the spec's components over one :class:`HubCache` (``HF_HUB_CACHE`` unless told otherwise):

- ``ModelAvailabilityManager`` (``store.availability``) answers *is this model usable?* with sizes, runs the disk
  pre-flight and plans cleanups, and checks compatibility with the installed diffusers;
- ``EnhancedModelDownloader`` (``store.download``) fetches with resume, retries, progress and cancellation, one
  download of a model at a time (a request for a model that is downloading waits for it);
- ``ModelHealthMonitor`` (``store.health``) runs the quick check before each load, the full check on demand or
  after a load error, and repairs by re-fetching only the files that failed;
- ``IntelligentFallbackManager`` (``store.catalog``) ranks alternatives for a model that cannot be used;
- ``VersionManager`` (``store.versions``) updates with automatic rollback.

The embedded tiny model enters the same cache through ``import_folder`` and repairs from its builder.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from components.store.availability import ModelAvailabilityManager, ModelStatus
from components.store.cache import HubCache
from components.store.catalog import CATALOG, CatalogEntry, IntelligentFallbackManager
from components.store.download import (
    BandwidthPolicy,
    CancelToken,
    DownloadResult,
    EnhancedModelDownloader,
    EventListener,
    FullDiskChoice,
    RetryPolicy,
)
from components.store.health import LocalBuilder, ModelHealthMonitor
from components.store.integrity import quick_check
from components.store.versions import VersionManager
from recovery.errors import CorruptModelError

__all__ = ["ModelStore"]


class ModelStore:
    """The one object the service holds: every store component over one cache."""

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        state_dir: str | Path | None = None,
        *,
        endpoint: str | None = None,
        token: str | bool | None = None,
        retry: RetryPolicy = RetryPolicy(),
        bandwidth: BandwidthPolicy = BandwidthPolicy(),
        reserve_bytes: int = 512 * 1024 * 1024,
        catalog: tuple[CatalogEntry, ...] = CATALOG,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = HubCache(cache_dir, state_dir)
        self.local_sources: dict[str, LocalBuilder] = {}
        self.downloader = EnhancedModelDownloader(
            self.cache, endpoint=endpoint, token=token, retry=retry, bandwidth=bandwidth, sleep=sleep, clock=clock
        )
        self.availability = ModelAvailabilityManager(self.cache, self.downloader, reserve_bytes=reserve_bytes)
        self.health = ModelHealthMonitor(self.cache, self.downloader, self.local_sources)
        self.versions = VersionManager(self.cache, self.downloader)
        self.recover_after_crash()
        self.fallbacks = IntelligentFallbackManager(
            catalog,
            is_available=lambda model_id: self.availability.availability(model_id, check_remote=False).status.usable,
        )

    def recover_after_crash(self) -> dict[str, int]:
        """What a process killed mid-action left, settled (run at every start): unfinished ref switches finished,
        folders a clean-up set aside removed, hidden partial files removed. Models another process holds are left
        to it. Returns how many of each were found."""
        settled = self.versions.recover_all()
        partials = 0
        for repo_id in self.cache.cached_repos():
            lock = self.cache.model_lock(repo_id)
            if lock.acquire(timeout=0):
                try:
                    partials += self.cache.sweep_partials(repo_id)
                finally:
                    lock.release()
        return {"switches": sum(map(len, settled.values())), "trash": self.cache.sweep_trash(), "partials": partials}

    def register_local_source(self, repo_id: str, build: LocalBuilder, *, install: bool = True) -> None:
        """A model with no hub behind it (the embedded one): ``build(dir) -> folder`` recreates it; with
        ``install`` it is built into the cache now unless already there."""
        self.local_sources[repo_id] = build
        if not install or self.cache.resolve(repo_id, "main") is not None:
            return
        with self.cache.model_lock(repo_id):  # another process may be installing it: the second finds it done
            if self.cache.resolve(repo_id, "main") is None:
                with tempfile.TemporaryDirectory(prefix="kintsugi-build-") as tmp:
                    self.cache.import_folder(repo_id, build(Path(tmp) / "model"))  # verified before it is current

    def using(self, repo_id: str) -> AbstractContextManager[None]:
        """Mark a model as read by a generation (in every process on this cache): no clean-up deletes it meanwhile."""
        return self.cache.using(repo_id)

    def download(
        self,
        repo_id: str,
        revision: str = "main",
        *,
        on_event: EventListener | None = None,
        cancel: CancelToken | None = None,
        full_disk: FullDiskChoice = "keep",
    ) -> DownloadResult:
        """Pre-flight (raises ``StorageFullError`` with a cleanup plan), then download and verify (one download of
        a model at a time: see ``EnhancedModelDownloader.download``; ``full_disk``: keep or remove the partial
        blobs when the disk fills up during the transfer)."""
        manifest = self.downloader.remote_manifest(repo_id, revision)
        self.availability.require_space(manifest)
        self.cache.save_manifest(manifest)  # so a partial download is visible as such, even offline
        result = self.downloader.download(
            repo_id, revision, manifest=manifest, on_event=on_event, cancel=cancel, full_disk=full_disk
        )
        if len(result.files_fetched) == len({e.blob_name for e in manifest.files}):
            self.cache.mark_verified(manifest, True)  # every blob was hashed before it was moved in place
        return result

    def ensure(
        self,
        repo_id: str,
        revision: str = "main",
        *,
        on_event: EventListener | None = None,
        cancel: CancelToken | None = None,
        repair: bool = True,
        full_disk: FullDiskChoice = "keep",
    ) -> Path:
        """Make a model usable and return its snapshot folder: download, resume or repair as needed.

        With ``repair=False`` damage found by the quick check is raised as ``CorruptModelError`` instead of being
        repaired here, so that a caller with a recovery engine classifies, repairs, counts and reports it.
        ``full_disk``: what a download does with its partial blobs when the disk fills up (see ``download``).
        """
        state = self.availability.availability(repo_id, revision, check_remote=False)
        if state.status is ModelStatus.CORRUPT and not repair:
            raise CorruptModelError(
                f"{repo_id}: {state.detail or 'damaged files'}", model_id=repo_id, files=list(state.bad_files)
            )
        damaged = state.status in (ModelStatus.CORRUPT, ModelStatus.PARTIAL)
        if damaged and self.cache.resolve(repo_id, revision) is not None:
            manifest = self.health.manifest(repo_id, revision)
            repaired = self.health.repair(
                repo_id, revision, report=quick_check(self.cache, manifest), on_event=on_event
            )
            if not repaired.ok:
                raise CorruptModelError(
                    f"{repo_id}: repair failed. " + " ".join(repaired.steps),
                    model_id=repo_id,
                    files=list(repaired.files),
                )
        elif not state.status.usable:
            if repo_id in self.local_sources:
                self.register_local_source(repo_id, self.local_sources[repo_id])
            else:
                self.download(repo_id, revision, on_event=on_event, cancel=cancel, full_disk=full_disk)
        self.health.before_load(repo_id, revision)
        commit = self.cache.resolve(repo_id, revision)
        assert commit is not None
        return self.cache.snapshot_dir(repo_id, commit)
