"""Is a model usable here? Status with sizes, the disk pre-flight, clean-up plans and compatibility.

``ModelAvailabilityManager`` (the spec's name) answers from the local cache first and asks the hub only for what is
not here: verified / present unverified / partial / corrupt / missing locally, gated or unknown on the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError

from components.store.cache import HubCache, RevisionManifest
from components.store.disk import CleanupPlan, PreflightReport, apply_cleanup, plan_cleanup, preflight
from components.store.download import EnhancedModelDownloader, access_steps
from components.store.integrity import FileProblem, quick_check
from components.store.versions import CompatibilityReport, check_compatibility
from recovery.errors import ModelAccessError, ModelVersionError, NetworkUnavailableError, StorageFullError

__all__ = ["Availability", "ModelAvailabilityManager", "ModelStatus"]


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

    def _sized(
        self,
        repo_id: str,
        revision: str,
        manifest: RevisionManifest,
        status: ModelStatus,
        detail: str = "",
        bad: tuple[str, ...] = (),
    ) -> Availability:
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
            raise StorageFullError(
                report.describe(),
                path=str(report.path),
                bytes_needed=report.bytes_needed,
                bytes_free=report.bytes_free,
                plan=report.plan,
            )
        return report

    def cleanup_plan(self, bytes_to_free: int, protect: str | None = None) -> CleanupPlan:
        return plan_cleanup(self.cache, bytes_to_free, {protect: set()} if protect else None)

    def apply_cleanup(self, plan: CleanupPlan) -> int:
        return apply_cleanup(plan)

    def compatibility(self, repo_id: str, revision: str = "main") -> CompatibilityReport:
        commit = self.cache.resolve(repo_id, revision)
        if commit is None:
            raise ModelVersionError(
                f"{repo_id}@{revision} is not in the cache", model_id=repo_id, expected=revision, found=None
            )
        return check_compatibility(self.cache.snapshot_dir(repo_id, commit))
