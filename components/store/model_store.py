"""The model store: availability, downloads, integrity, repair, disk, versions and fallbacks on the HF cache.

``ModelStore`` bundles the spec's components over one :class:`HubCache` (``HF_HUB_CACHE`` unless told otherwise):

- ``ModelAvailabilityManager`` answers *is this model usable?* with sizes, runs the disk pre-flight and plans
  cleanups, and checks compatibility with the installed diffusers;
- ``EnhancedModelDownloader`` (``store_download``) fetches with resume, retries, progress and cancellation;
- ``ModelHealthMonitor`` runs the quick check before each load, the full check on demand or after a load error,
  and repairs by re-fetching only the files that failed;
- ``IntelligentFallbackManager`` (``store_catalog``) ranks alternatives for a model that cannot be used;
- ``VersionManager`` (``store_versions``) updates with automatic rollback;
- ``GenerationQueue`` (``store_queue``) holds requests until their model is ready.

The embedded tiny model enters the same cache through ``import_folder`` and repairs from its builder.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from components.store_cache import HubCache, RevisionManifest
from components.store_catalog import CATALOG, CatalogEntry, DeviceBudget, IntelligentFallbackManager
from components.store_disk import CleanupPlan, PreflightReport, apply_cleanup, plan_cleanup, preflight
from components.store_download import (
    BandwidthPolicy,
    CancelToken,
    DownloadResult,
    EnhancedModelDownloader,
    EventListener,
    RetryPolicy,
    access_steps,
)
from components.store_integrity import (
    FileProblem,
    IntegrityReport,
    VerifyProgress,
    full_check,
    quick_check,
)
from components.store_queue import GenerationQueue, QueuedRequest
from components.store_versions import CompatibilityReport, VersionManager, check_compatibility
from recovery.errors import (
    CorruptModelError,
    KintsugiError,
    ModelAccessError,
    ModelVersionError,
    NetworkUnavailableError,
    StorageFullError,
)

__all__ = [
    "Availability",
    "ModelAvailabilityManager",
    "ModelHealthMonitor",
    "ModelStatus",
    "ModelStore",
    "RepairReport",
    "StorePort",
]

LocalBuilder = Callable[[Path], Path]


class ModelStatus(str, Enum):
    VERIFIED = "verified"
    PRESENT_UNVERIFIED = "present_unverified"
    PARTIAL = "partial"
    CORRUPT = "corrupt"
    MISSING = "missing"
    GATED = "gated"
    UNKNOWN_REPO = "unknown_repo"
    UNKNOWN_REVISION = "unknown_revision"

    @property
    def usable(self) -> bool:
        return self in (ModelStatus.VERIFIED, ModelStatus.PRESENT_UNVERIFIED)


@dataclass(frozen=True)
class Availability:
    """Where a model stands locally (and remotely when it is not here), with sizes."""

    repo_id: str
    revision: str
    status: ModelStatus
    commit: str | None = None
    bytes_expected: int = 0
    bytes_present: int = 0
    bad_files: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    detail: str = ""

    @property
    def bytes_missing(self) -> int:
        return max(0, self.bytes_expected - self.bytes_present)


@dataclass(frozen=True)
class RepairReport:
    """What a repair re-fetched and whether the revision verifies afterwards; ``steps`` when it could not."""

    repo_id: str
    commit: str
    ok: bool
    files: tuple[str, ...]
    source: str
    before: IntegrityReport
    after: IntegrityReport | None = None
    steps: tuple[str, ...] = field(default_factory=tuple)
    detail: str = ""


class ModelAvailabilityManager:
    """Status with sizes, disk pre-flight, cleanup plans and compatibility for models in the cache."""

    def __init__(self, cache: HubCache, downloader: EnhancedModelDownloader, *, reserve_bytes: int) -> None:
        self.cache, self.downloader, self.reserve_bytes = cache, downloader, reserve_bytes

    def availability(self, repo_id: str, revision: str = "main", *, check_remote: bool = True) -> Availability:
        """Verified / present unverified / partial / corrupt / missing locally; gated or unknown on the hub."""
        commit = self.cache.resolve(repo_id, revision)
        if commit is not None and (manifest := self.cache.manifest(repo_id, commit)) is not None:
            return self._local(repo_id, revision, manifest)
        recorded = self._started_download(repo_id)
        if recorded is not None:
            return self._sized(repo_id, revision, recorded, ModelStatus.PARTIAL, "download started, not finished")
        if not check_remote or constants.HF_HUB_OFFLINE:
            return Availability(repo_id, revision, ModelStatus.MISSING, detail="not in the cache (not asked the hub)")
        try:
            remote = self.downloader.remote_manifest(repo_id, revision)
        except ModelAccessError:
            return Availability(repo_id, revision, ModelStatus.GATED, steps=access_steps(repo_id))
        except ModelVersionError as exc:
            return Availability(repo_id, revision, ModelStatus.UNKNOWN_REVISION, detail=str(exc))
        except RepositoryNotFoundError as exc:
            return Availability(repo_id, revision, ModelStatus.UNKNOWN_REPO, detail=str(exc).splitlines()[0])
        except NetworkUnavailableError as exc:
            return Availability(repo_id, revision, ModelStatus.MISSING, detail=f"hub unreachable: {exc}")
        return self._sized(repo_id, revision, remote, ModelStatus.MISSING, "on the hub, not downloaded")

    def _local(self, repo_id: str, revision: str, manifest: RevisionManifest) -> Availability:
        report = quick_check(self.cache, manifest)
        if report.ok:
            status = ModelStatus.VERIFIED if self.cache.is_verified(manifest) else ModelStatus.PRESENT_UNVERIFIED
            return self._sized(repo_id, revision, manifest, status)
        only_missing = all(b.problem is FileProblem.MISSING for b in report.bad)
        status = ModelStatus.PARTIAL if only_missing else ModelStatus.CORRUPT
        detail = "; ".join(f"{b.path}: {b.detail}" for b in report.bad)
        return self._sized(repo_id, revision, manifest, status, detail, report.bad_paths)

    def _sized(self, repo_id: str, revision: str, manifest: RevisionManifest, status: ModelStatus,
               detail: str = "", bad: tuple[str, ...] = ()) -> Availability:
        partial = self.cache.partial_bytes(repo_id)
        present = 0
        for entry in {e.blob_name: e for e in manifest.files}.values():
            blob = self.cache.blob_path(repo_id, entry.blob_name)
            present += blob.stat().st_size if blob.is_file() else partial.get(entry.blob_name, 0)
        expected = sum({e.blob_name: e.size for e in manifest.files}.values())
        return Availability(repo_id, revision, status, manifest.commit, expected, present, bad, detail=detail)

    def _started_download(self, repo_id: str) -> RevisionManifest | None:
        manifests = self.cache.read_state(repo_id)["manifests"]
        blobs = self.cache.repo_dir(repo_id) / "blobs"
        if not manifests or not blobs.is_dir() or not any(blobs.iterdir()):
            return None
        commit, rows = list(manifests.items())[-1]
        return RevisionManifest.from_json(repo_id, commit, rows)

    def preflight(self, manifest: RevisionManifest) -> PreflightReport:
        """Bytes still needed vs free space (keeping ``reserve_bytes``), with a cleanup plan when short."""
        return preflight(self.cache, manifest, self.reserve_bytes)

    def require_space(self, manifest: RevisionManifest) -> PreflightReport:
        """The pre-flight, raising ``StorageFullError`` (carrying the plan) when the revision does not fit."""
        report = self.preflight(manifest)
        if not report.ok:
            plan = report.plan
            freeable = f"; deleting {len(plan.items)} old revision(s) would free {plan.bytes_freed} bytes" if plan else ""
            raise StorageFullError(
                f"{manifest.repo_id} needs {report.bytes_needed} bytes (+{report.reserve_bytes} kept free) but "
                f"{report.path} has {report.bytes_free} free{freeable}", path=str(report.path),
                bytes_needed=report.bytes_needed, bytes_free=report.bytes_free, plan=plan)
        return report

    def cleanup_plan(self, bytes_to_free: int, protect: str | None = None) -> CleanupPlan:
        return plan_cleanup(self.cache, bytes_to_free, {protect: set()} if protect else None)

    def apply_cleanup(self, plan: CleanupPlan) -> int:
        return apply_cleanup(plan)

    def compatibility(self, repo_id: str, revision: str = "main") -> CompatibilityReport:
        commit = self.cache.resolve(repo_id, revision)
        if commit is None:
            raise ModelVersionError(f"{repo_id}@{revision} is not in the cache", model_id=repo_id,
                                    expected=revision, found=None)
        return check_compatibility(self.cache.snapshot_dir(repo_id, commit))


class ModelHealthMonitor:
    """Quick check before each load, full check on demand or after a load error, targeted repair."""

    def __init__(self, cache: HubCache, downloader: EnhancedModelDownloader,
                 local_sources: dict[str, LocalBuilder]) -> None:
        self.cache, self.downloader, self.local_sources = cache, downloader, local_sources

    def manifest(self, repo_id: str, revision: str = "main") -> RevisionManifest:
        commit = self.cache.resolve(repo_id, revision)
        manifest = self.cache.manifest(repo_id, commit) if commit else None
        if manifest is None:
            raise ModelVersionError(f"{repo_id}@{revision} is not in the cache", model_id=repo_id,
                                    expected=revision, found=None)
        return manifest

    def before_load(self, repo_id: str, revision: str = "main") -> IntegrityReport:
        """The quick check; raises ``CorruptModelError`` naming the bad files so the load is not attempted."""
        report = quick_check(self.cache, self.manifest(repo_id, revision))
        if not report.ok:
            raise CorruptModelError(f"{repo_id}: " + "; ".join(f"{b.path}: {b.detail}" for b in report.bad),
                                    model_id=repo_id, files=list(report.bad_paths))
        return report

    def verify(self, repo_id: str, revision: str = "main", *,
               on_progress: Callable[[VerifyProgress], None] | None = None) -> IntegrityReport:
        """The full check (every hash), remembered so availability can say *verified*."""
        manifest = self.manifest(repo_id, revision)
        report = full_check(self.cache, manifest, on_progress=on_progress)
        self.cache.mark_verified(manifest, report.ok)
        return report

    def after_load_error(self, repo_id: str, revision: str, error: BaseException) -> IntegrityReport:
        """A load failed: hash everything to tell damaged files from other causes of ``error``."""
        return self.verify(repo_id, revision)

    def repair(self, repo_id: str, revision: str = "main", *, report: IntegrityReport | None = None,
               on_event: EventListener | None = None) -> RepairReport:
        """Re-fetch only the files that failed (each written aside and swapped in), then verify them again."""
        manifest = self.manifest(repo_id, revision)
        before = report or full_check(self.cache, manifest)
        bad = before.bad_paths
        source = "local" if repo_id in self.local_sources else "hub"
        if not bad:
            return RepairReport(repo_id, manifest.commit, True, (), source, before, before)
        if source == "local":
            with tempfile.TemporaryDirectory(prefix="kintsugi-rebuild-") as tmp:
                rebuilt = self.local_sources[repo_id](Path(tmp) / "model")
                self.cache.import_folder(repo_id, rebuilt, only=bad)
        else:
            try:
                if any(e.size < 0 for e in manifest.files):
                    manifest = self.downloader.remote_manifest(repo_id, manifest.commit)
                self.downloader.download(repo_id, manifest.commit, manifest=manifest, files=bad, fresh=True,
                                         set_ref=False, on_event=on_event)
            except NetworkUnavailableError as exc:
                return RepairReport(repo_id, manifest.commit, False, bad, source, before,
                                    steps=_offline_repair_steps(repo_id, manifest.commit, bad), detail=str(exc))
        subset = RevisionManifest(repo_id, manifest.commit, tuple(e for e in manifest.files if e.path in bad))
        after = full_check(self.cache, subset)
        if after.ok:
            self.cache.mark_verified(manifest, full_check(self.cache, manifest).ok)
        return RepairReport(repo_id, manifest.commit, after.ok, bad, source, before, after)


def _offline_repair_steps(repo_id: str, commit: str, files: tuple[str, ...]) -> tuple[str, ...]:
    return (
        "Reconnect to the network (and unset HF_HUB_OFFLINE if it is set).",
        f"Then repair again, or run: hf download {repo_id} {' '.join(files)} --revision {commit} --force-download",
        "Until then, choose one of the suggested models that is already downloaded.",
    )


class ModelStore:
    """The one object the service holds: every store component over one cache."""

    def __init__(self, cache_dir: str | Path | None = None, state_dir: str | Path | None = None, *,
                 endpoint: str | None = None, token: str | bool | None = None,
                 retry: RetryPolicy = RetryPolicy(), bandwidth: BandwidthPolicy = BandwidthPolicy(),
                 reserve_bytes: int = 512 * 1024 * 1024, catalog: tuple[CatalogEntry, ...] = CATALOG,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = HubCache(cache_dir, state_dir)
        self.local_sources: dict[str, LocalBuilder] = {}
        self.downloader = EnhancedModelDownloader(self.cache, endpoint=endpoint, token=token, retry=retry,
                                                  bandwidth=bandwidth, sleep=sleep, clock=clock)
        self.availability = ModelAvailabilityManager(self.cache, self.downloader, reserve_bytes=reserve_bytes)
        self.health = ModelHealthMonitor(self.cache, self.downloader, self.local_sources)
        self.versions = VersionManager(self.cache, self.downloader)
        self.fallbacks = IntelligentFallbackManager(
            catalog, is_available=lambda model_id: self.availability.availability(
                model_id, check_remote=False).status.usable)
        self.queue = GenerationQueue(self.cache.state_dir / "queue.sqlite")

    def register_local_source(self, repo_id: str, build: LocalBuilder, *, install: bool = True) -> None:
        """A model with no hub behind it (the embedded one): ``build(dir) -> folder`` recreates it; with
        ``install`` it is built into the cache now unless already there."""
        self.local_sources[repo_id] = build
        if install and self.cache.resolve(repo_id, "main") is None:
            with tempfile.TemporaryDirectory(prefix="kintsugi-build-") as tmp:
                manifest = self.cache.import_folder(repo_id, build(Path(tmp) / "model"))
            # import_folder hashed every file it wrote: the revision is verified by construction
            self.cache.mark_verified(manifest, True)

    def download(self, repo_id: str, revision: str = "main", *, on_event: EventListener | None = None,
                 cancel: CancelToken | None = None) -> DownloadResult:
        """Pre-flight (raises ``StorageFullError`` with a cleanup plan), then download and verify (one download of
        a model at a time: see ``EnhancedModelDownloader.download``)."""
        manifest = self.downloader.remote_manifest(repo_id, revision)
        self.availability.require_space(manifest)
        self.cache.save_manifest(manifest)  # so a partial download is visible as such, even offline
        result = self.downloader.download(repo_id, revision, manifest=manifest, on_event=on_event, cancel=cancel)
        if len(result.files_fetched) == len({e.blob_name for e in manifest.files}):
            self.cache.mark_verified(manifest, True)  # every blob was hashed before it was moved in place
        return result

    def ensure(self, repo_id: str, revision: str = "main", *, on_event: EventListener | None = None,
               cancel: CancelToken | None = None, repair: bool = True) -> Path:
        """Make a model usable and return its snapshot folder: download, resume or repair as needed.

        With ``repair=False`` damage found by the quick check is raised as ``CorruptModelError`` instead of being
        repaired here, so that a caller with a recovery engine classifies, repairs, counts and reports it.
        """
        state = self.availability.availability(repo_id, revision, check_remote=False)
        if state.status is ModelStatus.CORRUPT and not repair:
            raise CorruptModelError(f"{repo_id}: {state.detail or 'damaged files'}", model_id=repo_id,
                                    files=list(state.bad_files))
        damaged = state.status in (ModelStatus.CORRUPT, ModelStatus.PARTIAL)
        if damaged and self.cache.resolve(repo_id, revision) is not None:
            manifest = self.health.manifest(repo_id, revision)
            repair = self.health.repair(repo_id, revision, report=quick_check(self.cache, manifest),
                                        on_event=on_event)
            if not repair.ok:
                raise CorruptModelError(f"{repo_id}: repair failed. " + " ".join(repair.steps),
                                        model_id=repo_id, files=list(repair.files))
        elif not state.status.usable:
            if repo_id in self.local_sources:
                self.register_local_source(repo_id, self.local_sources[repo_id])
            else:
                self.download(repo_id, revision, on_event=on_event, cancel=cancel)
        self.health.before_load(repo_id, revision)
        commit = self.cache.resolve(repo_id, revision)
        assert commit is not None
        return self.cache.snapshot_dir(repo_id, commit)

    def download_and_release(self, repo_id: str, revision: str, run: Callable[[QueuedRequest], None], *,
                             on_event: EventListener | None = None,
                             cancel: CancelToken | None = None) -> list[QueuedRequest]:
        """Download (feeding the queue's ETAs), verify fully, then run the requests that waited for it."""

        def listen(event: object) -> None:
            self.queue.record_progress(event)  # type: ignore[arg-type]
            if on_event is not None:
                on_event(event)  # type: ignore[arg-type]

        self.download(repo_id, revision, on_event=listen, cancel=cancel)
        report = self.health.verify(repo_id, revision)
        if not report.ok:
            raise CorruptModelError(f"{repo_id}: verification failed after download", model_id=repo_id,
                                    files=list(report.bad_paths))
        return self.queue.release(repo_id, revision, run)


_STORE_FAILURES = (KintsugiError, HfHubHTTPError)


class StorePort:
    """The store as ``recovery.ports.ModelStore`` sees it: yes/no answers for the repair and fallback strategies.

    Failures the store raises (typed, already classified elsewhere) become ``False`` here; the strategy then
    reports that the repair did not work and the engine moves on to the next strategy.
    """

    def __init__(self, store: ModelStore, device: Callable[[], DeviceBudget] = lambda: DeviceBudget(None, 0.0),
                 revision: str = "main") -> None:
        self.store, self.device, self.revision = store, device, revision

    def verify(self, model_id: str) -> bool:
        try:
            self.store.health.before_load(model_id, self.revision)
        except _STORE_FAILURES:
            return False
        return True

    def repair(self, model_id: str) -> bool:
        try:
            return self.store.health.repair(model_id, self.revision).ok
        except _STORE_FAILURES:
            return False

    def download(self, model_id: str) -> bool:
        try:
            self.store.ensure(model_id, self.revision)
        except _STORE_FAILURES:
            return False
        return True

    def fallback_candidates(self, model_id: str) -> list[str]:
        return [s.entry.model_id for s in self.store.fallbacks.suggest(model_id, self.device())]
