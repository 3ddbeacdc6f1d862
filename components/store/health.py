"""Model health: the quick check before each load, the full check on demand or after a load error, and repair
that re-fetches (or rebuilds) only the files that failed (``ModelHealthMonitor``, the spec's name)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from components.store.cache import HubCache, RevisionManifest
from components.store.download import EnhancedModelDownloader, EventListener
from components.store.integrity import IntegrityReport, VerifyProgress, full_check, quick_check
from recovery.errors import CorruptModelError, ModelVersionError, NetworkUnavailableError

__all__ = ["LocalBuilder", "ModelHealthMonitor", "RepairReport"]

LocalBuilder = Callable[[Path], Path]


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


class ModelHealthMonitor:
    """Quick check before each load, full check on demand or after a load error, targeted repair."""

    def __init__(
        self, cache: HubCache, downloader: EnhancedModelDownloader, local_sources: dict[str, LocalBuilder]
    ) -> None:
        self.cache, self.downloader, self.local_sources = cache, downloader, local_sources

    def manifest(self, repo_id: str, revision: str = "main") -> RevisionManifest:
        commit = self.cache.resolve(repo_id, revision)
        manifest = self.cache.manifest(repo_id, commit) if commit else None
        if manifest is None:
            raise ModelVersionError(
                f"{repo_id}@{revision} is not in the cache", model_id=repo_id, expected=revision, found=None
            )
        return manifest

    def before_load(self, repo_id: str, revision: str = "main") -> IntegrityReport:
        """The quick check; raises ``CorruptModelError`` naming the bad files so the load is not attempted."""
        report = quick_check(self.cache, self.manifest(repo_id, revision))
        if not report.ok:
            raise CorruptModelError(
                f"{repo_id}: " + "; ".join(f"{b.path}: {b.detail}" for b in report.bad),
                model_id=repo_id,
                files=list(report.bad_paths),
            )
        return report

    def verify(
        self, repo_id: str, revision: str = "main", *, on_progress: Callable[[VerifyProgress], None] | None = None
    ) -> IntegrityReport:
        """The full check (every hash), remembered so availability can say *verified*."""
        manifest = self.manifest(repo_id, revision)
        report = full_check(self.cache, manifest, on_progress=on_progress)
        self.cache.mark_verified(manifest, report.ok)
        return report

    def after_load_error(self, repo_id: str, revision: str, error: BaseException) -> IntegrityReport:
        """A load failed: hash everything to tell damaged files from other causes of ``error``."""
        return self.verify(repo_id, revision)

    def repair(
        self,
        repo_id: str,
        revision: str = "main",
        *,
        report: IntegrityReport | None = None,
        on_event: EventListener | None = None,
    ) -> RepairReport:
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
                self.downloader.download(
                    repo_id, manifest.commit, manifest=manifest, files=bad, fresh=True, set_ref=False, on_event=on_event
                )
            except NetworkUnavailableError as exc:
                return RepairReport(
                    repo_id,
                    manifest.commit,
                    False,
                    bad,
                    source,
                    before,
                    steps=_offline_repair_steps(repo_id, manifest.commit, bad),
                    detail=str(exc),
                )
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
