"""Disk pre-flight and cleanup plans for the hub cache.

Before a download: bytes still needed (the hub's file sizes, minus blobs and partial files already here) against
the free space of the cache's filesystem, keeping ``reserve_bytes`` free. When that falls short, a concrete plan
from ``scan_cache_dir``: which repo revisions to delete and how much each frees (shared blobs accounted for),
old detached revisions first, then unfinished downloads (their ``*.incomplete`` blobs, kept for resuming — oldest
first), then whole repos least recently used. Nothing is deleted until ``apply_cleanup``.

The same report explains a disk that filled up *during* a download (another writer took the space after the
pre-flight): ``describe`` says, in sizes a user reads, what is still needed, what is free and what the plan frees.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HFCacheInfo, scan_cache_dir

from components.store.cache import HubCache, RevisionManifest
from recovery.errors import UnsupportedOperationError
from recovery.messages import format_bytes

__all__ = [
    "CleanupItem",
    "CleanupPlan",
    "PreflightReport",
    "apply_cleanup",
    "bytes_needed",
    "free_bytes",
    "plan_cleanup",
    "preflight",
    "unfinished_downloads",
]


@dataclass(frozen=True)
class CleanupItem:
    """One revision — or one unfinished download (``files``: its partial blobs, ``commit`` empty) — that could be
    deleted, and why it was chosen."""

    repo_id: str
    commit: str
    refs: tuple[str, ...]
    bytes_freed: int
    reason: str
    last_accessed: float
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class CleanupPlan:
    """Revisions to delete to free ``bytes_to_free``; ``bytes_freed`` counts blobs shared between items once."""

    cache_dir: Path
    bytes_to_free: int
    items: tuple[CleanupItem, ...]
    bytes_freed: int

    @property
    def sufficient(self) -> bool:
        return self.bytes_freed >= self.bytes_to_free

    def describe(self) -> str:
        """One sentence: what deleting the plan's items would free, whether that is enough, and the items."""
        if not self.items:
            return "nothing in the cache can be deleted to make room"
        enough = "enough" if self.sufficient else f"not enough: {format_bytes(self.bytes_to_free)} are needed"
        listed = "; ".join(_describe_item(item) for item in self.items)
        return f"deleting {len(self.items)} item(s) would free {format_bytes(self.bytes_freed)} ({enough}): {listed}"


@dataclass(frozen=True)
class PreflightReport:
    """Whether a revision fits on the cache's filesystem, and if not, how to make it fit."""

    repo_id: str
    commit: str
    path: Path
    bytes_needed: int
    bytes_free: int
    reserve_bytes: int
    plan: CleanupPlan | None = None

    @property
    def ok(self) -> bool:
        return self.shortfall == 0

    @property
    def shortfall(self) -> int:
        return max(0, self.bytes_needed + self.reserve_bytes - self.bytes_free)

    def describe(self) -> str:
        """Needed, kept free, free and short, in readable sizes, then the clean-up plan (no paths: users read it)."""
        kept = f" (+{format_bytes(self.reserve_bytes)} kept free)" if self.reserve_bytes else ""
        needs = f"{self.repo_id} needs {format_bytes(self.bytes_needed)}{kept}"
        free = f"its disk has {format_bytes(self.bytes_free)} free"
        if self.ok:
            return f"{needs} and {free}"
        text = f"{needs} but {free}, {format_bytes(self.shortfall)} short"
        return f"{text}; {self.plan.describe()}" if self.plan is not None else text


def free_bytes(path: Path) -> int:
    """Free space of the filesystem holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def bytes_needed(cache: HubCache, manifest: RevisionManifest) -> int:
    """Bytes still to write for a revision: files without a complete blob, minus their partial downloads."""
    partial = cache.partial_bytes(manifest.repo_id)
    needed = 0
    for entry in {e.blob_name: e for e in manifest.files}.values():
        blob = cache.blob_path(manifest.repo_id, entry.blob_name)
        if not (blob.is_file() and blob.stat().st_size == entry.size):
            needed += entry.size - min(partial.get(entry.blob_name, 0), entry.size)
    return needed


def preflight(cache: HubCache, manifest: RevisionManifest, reserve_bytes: int) -> PreflightReport:
    """Compare what a revision still needs with the free space; attach a cleanup plan when short."""
    report = PreflightReport(
        manifest.repo_id,
        manifest.commit,
        cache.cache_dir,
        bytes_needed(cache, manifest),
        free_bytes(cache.cache_dir),
        reserve_bytes,
    )
    if report.ok:
        return report
    plan = plan_cleanup(cache, report.shortfall, protect={manifest.repo_id: {manifest.commit}})
    return PreflightReport(**{**report.__dict__, "plan": plan})


def plan_cleanup(
    cache: HubCache,
    bytes_to_free: int,
    protect: dict[str, set[str]] | None = None,
    *,
    keep: Collection[str] = (),
) -> CleanupPlan:
    """Pick revisions to delete until ``bytes_to_free`` is reached; never touches protected repos' current
    revisions (what a ref points to, the commits in ``protect``, and the last revision kept for rollback) nor their
    unfinished downloads, and never offers anything of the repos in ``keep`` (the default model, models in use)."""
    protect = protect or {}
    if not cache.cache_dir.is_dir():
        return CleanupPlan(cache.cache_dir, bytes_to_free, (), 0)
    info = scan_cache_dir(cache.cache_dir)
    detached, whole = [], []
    for repo in info.repos:
        if repo.repo_type != "model" or repo.repo_id in keep:
            continue
        kept = protect.get(repo.repo_id, set()) | set(cache.previous(repo.repo_id, "main")[-1:])
        for revision in repo.revisions:
            if revision.commit_hash in kept or (repo.repo_id in protect and revision.refs):
                continue
            freed = info.delete_revisions(revision.commit_hash).expected_freed_size
            if not revision.refs:
                item = CleanupItem(
                    repo.repo_id,
                    revision.commit_hash,
                    (),
                    freed,
                    "old revision that no branch points to",
                    repo.last_accessed,
                )
                detached.append(item)
            else:
                item = CleanupItem(
                    repo.repo_id,
                    revision.commit_hash,
                    tuple(sorted(revision.refs)),
                    freed,
                    "model not used recently",
                    repo.last_accessed,
                )
                whole.append(item)
    unfinished = [
        item for item in unfinished_downloads(cache) if item.repo_id not in protect and item.repo_id not in keep
    ]
    chosen: list[CleanupItem] = []
    for item in (
        sorted(detached, key=lambda i: i.last_accessed)
        + sorted(unfinished, key=lambda i: i.last_accessed)
        + sorted(whole, key=lambda i: i.last_accessed)
    ):
        if _freed(info, chosen) >= bytes_to_free:
            break
        chosen.append(item)
    return CleanupPlan(cache.cache_dir, bytes_to_free, tuple(chosen), _freed(info, chosen))


def unfinished_downloads(cache: HubCache) -> list[CleanupItem]:
    """One item per model with ``*.incomplete`` blobs in the cache (a download stopped and kept for resuming)."""
    items = []
    for blobs in sorted(cache.cache_dir.glob("models--*/blobs")) if cache.cache_dir.is_dir() else ():
        files = tuple(sorted(p for p in blobs.glob("*.incomplete") if p.is_file() and not p.name.startswith(".")))
        if files:
            stats = [p.stat() for p in files]
            repo_id = blobs.parent.name.removeprefix("models--").replace("--", "/")
            items.append(
                CleanupItem(
                    repo_id,
                    "",
                    (),
                    sum(s.st_size for s in stats),
                    "unfinished download (kept to resume)",
                    max(s.st_mtime for s in stats),
                    files,
                )
            )
    return items


def apply_cleanup(plan: CleanupPlan) -> int:
    """Delete the plan's revisions and unfinished downloads (only ever on request); returns the bytes freed (for
    revisions, what the hub expects to free)."""
    freed = 0
    cache = HubCache(plan.cache_dir)
    # Nothing of a model another process is downloading, repairing, updating or reading is deleted (system.locks).
    with cache.exclusive(item.repo_id for item in plan.items) as refused:
        if refused is not None:
            raise UnsupportedOperationError(
                f"Nothing was deleted: {refused}. Preview the clean-up again when it has finished.",
                operation="clean-up",
                reason=refused,
            )
        for item in plan.items:
            for path in item.files:
                if path.is_file():
                    freed += path.stat().st_size
                    path.unlink()
        commits = [i.commit for i in plan.items if i.commit]
        if commits:
            strategy = scan_cache_dir(plan.cache_dir).delete_revisions(*commits)
            cache.delete(strategy)  # refs first, folders moved aside, blobs last: a kill leaves no half revision
            freed += strategy.expected_freed_size
    return freed


def _describe_item(item: CleanupItem) -> str:
    what = f"{item.repo_id} revision {item.commit[:10]}" if item.commit else f"{item.repo_id} partial download"
    refs = f" ({', '.join(item.refs)})" if item.refs else ""
    return f"{what}{refs}, {format_bytes(item.bytes_freed)}, {item.reason}"


def _freed(info: HFCacheInfo, items: list[CleanupItem]) -> int:
    partial = sum(i.bytes_freed for i in items if not i.commit)
    commits = [i.commit for i in items if i.commit]
    return partial + (info.delete_revisions(*commits).expected_freed_size if commits else 0)
