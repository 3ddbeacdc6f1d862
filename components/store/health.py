"""Model health: the quick check before each load, the full check on demand or after a load error, and repair
that re-fetches (or rebuilds) only the files that failed (``ModelHealthMonitor``, the spec's name).

Files can also be damaged while a model sits loaded in the warm worker, where no load would notice.
``HealthWatch`` re-checks every installed model in the background, on a schedule and whenever a snapshot file
changes (size, mtime, ctime or inode), and repairs what it finds without touching the worker: the repaired file
replaces the damaged blob by a rename, a running generation keeps the file it opened, and the next request of that
model loads it again (``repair_count`` changed). Every repair is remembered as a ``HealthFinding``: the Models tab
lists them, and the next request of the model is told about those made in the background (``untold``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from components.store.cache import HubCache, ManifestEntry, RevisionManifest
from components.store.download import EnhancedModelDownloader, EventListener
from components.store.integrity import (
    BadFile,
    CheckLevel,
    FileProblem,
    IntegrityReport,
    VerifyProgress,
    full_check,
    quick_check,
)
from recovery.errors import CorruptModelError, ModelVersionError, NetworkUnavailableError

__all__ = [
    "HealthFinding",
    "HealthTrigger",
    "HealthWatch",
    "LocalBuilder",
    "ModelHealthMonitor",
    "RepairReport",
    "problem_lines",
]

LocalBuilder = Callable[[Path], Path]
_LOG = logging.getLogger(__name__)
_KEPT_FINDINGS = 200


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


class HealthTrigger(str, Enum):
    """What found the damage a repair fixed."""

    BEFORE_USE = "check before use"  # a request's (or a download's) quick check, repaired on its path
    SCHEDULE = "scheduled check"  # the health watch's periodic quick check
    FILE_CHANGE = "file change"  # the health watch saw a snapshot file change and hashed it
    MODELS_TAB = "Models tab"  # the user's Repair
    WORKER_CRASH = "worker crash (SIGBUS)"  # the worker died reading a mapped file; the full check found damage


@dataclass(frozen=True)
class HealthFinding:
    """One repair: when, what found it, which files were damaged and how, and what was done about it."""

    at: float  # wall-clock time (``time.time()``) the repair ended
    trigger: HealthTrigger
    repair: RepairReport

    @property
    def repo_id(self) -> str:
        return self.repair.repo_id

    @property
    def problems(self) -> tuple[str, ...]:
        """One ``path: what is wrong`` line per damaged file (sizes, never hashes or local paths)."""
        return problem_lines(self.repair.before)

    def sentence(self) -> str:
        """The finding in one plain line, for the Models tab and a request's timeline."""
        when = time.strftime("%H:%M:%S", time.localtime(self.at))
        found = "; ".join(self.problems) or "damaged files"
        if self.repair.ok:
            done = f"repaired from the {_SOURCE_WORDS.get(self.repair.source, self.repair.source)}"
            checked = "a full check of the repaired files passes"
        else:
            done, checked = "could not be repaired", (self.repair.steps or ("repair it from the Models tab",))[0]
        return f"{when} {self.trigger.value}: {self.repo_id} — {found} → {done}; {checked}"

    def to_dict(self) -> dict[str, Any]:
        """The finding as plain data (a timeline event's ``health`` key)."""
        return {
            "at": self.at,
            "trigger": self.trigger.value,
            "model_id": self.repo_id,
            "commit": self.repair.commit,
            "files": list(self.repair.files),
            "problems": list(self.problems),
            "repaired": self.repair.ok,
            "source": self.repair.source,
        }


_SOURCE_WORDS = {"local": "built-in source", "hub": "hub"}


def problem_lines(report: IntegrityReport) -> tuple[str, ...]:
    """One ``path: what is wrong`` line per damaged file of ``report`` (sizes, never hashes or local paths)."""
    return tuple(_problem_words(bad) for bad in report.bad)


def _problem_words(bad: BadFile) -> str:
    words = bad.problem.value.replace("_", " ")
    if bad.problem is FileProblem.SIZE_MISMATCH:
        words = f"truncated or extended ({bad.detail})"
    elif bad.problem is FileProblem.HASH_MISMATCH:
        words = "contents changed (hash mismatch)"
    return f"{bad.path}: {words}"


class ModelHealthMonitor:
    """Quick check before each load, full check on demand or after a load error, targeted repair; a record of
    every repair (``findings``) and a count per model that tells a warm worker to load it again."""

    def __init__(
        self, cache: HubCache, downloader: EnhancedModelDownloader, local_sources: dict[str, LocalBuilder]
    ) -> None:
        self.cache, self.downloader, self.local_sources = cache, downloader, local_sources
        self._record_lock = threading.Lock()
        self._findings: deque[HealthFinding] = deque(maxlen=_KEPT_FINDINGS)
        self._untold: dict[str, list[HealthFinding]] = {}
        self._repairs: Counter[str] = Counter()
        self._repair_locks: dict[str, threading.Lock] = {}
        self._found_by: dict[str, HealthTrigger] = {}

    def installed(self) -> list[RevisionManifest]:
        """The manifest of the ``main`` revision of every model in the cache (what a request would load)."""
        manifests = []
        for folder in sorted(self.cache.cache_dir.glob("models--*")):
            repo_id = folder.name.removeprefix("models--").replace("--", "/", 1)
            commit = self.cache.resolve(repo_id, "main")
            manifest = self.cache.manifest(repo_id, commit) if commit else None
            if manifest is not None:
                manifests.append(manifest)
        return manifests

    def findings(self, repo_id: str | None = None) -> list[HealthFinding]:
        """The repairs remembered (the last 200), oldest first; of one model with ``repo_id``."""
        with self._record_lock:
            return [f for f in self._findings if repo_id is None or f.repo_id == repo_id]

    def untold(self, repo_id: str) -> list[HealthFinding]:
        """The background repairs of ``repo_id`` no request was told about yet; each is returned once."""
        with self._record_lock:
            return self._untold.pop(repo_id, [])

    def found_by(self, repo_id: str, trigger: HealthTrigger) -> None:
        """Say what found the damage of ``repo_id`` that the next repair on a request's path (the engine's, through
        the store port, which knows no trigger) fixes: its finding names ``trigger`` instead of *check before use*.
        Any repair of the model takes the note, so it never outlives the damage it was about."""
        with self._record_lock:
            self._found_by[repo_id] = trigger

    def repair_count(self, repo_id: str) -> int:
        """How many repairs rewrote files of ``repo_id``: a model loaded before the last one is loaded again."""
        with self._record_lock:
            return self._repairs[repo_id]

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
        trigger: HealthTrigger = HealthTrigger.BEFORE_USE,
    ) -> RepairReport:
        """Re-fetch only the files that failed (each written aside and swapped in), then verify them again.

        One repair of a model at a time: a second caller (the health watch and a request found the same damage)
        waits, then checks again what the first one left instead of trusting its own earlier ``report``. A repair
        that rewrote files is remembered as a ``HealthFinding`` found by ``trigger``."""
        with self._record_lock:
            lock = self._repair_locks.setdefault(repo_id, threading.Lock())
            noted = self._found_by.pop(repo_id, None)
        if noted is not None and trigger is HealthTrigger.BEFORE_USE:
            trigger = noted
        if not lock.acquire(blocking=False):
            lock.acquire()
            if report is not None:  # what the other repair left: the quick check, and the named files hashed again
                manifest = self.manifest(repo_id, revision)
                report = damage(self.cache, manifest, [e for e in manifest.files if e.path in report.bad_paths])
        try:
            result = self._repair(repo_id, revision, report, on_event)
        finally:
            lock.release()
        if result.files:
            finding = HealthFinding(time.time(), trigger, result)
            with self._record_lock:
                self._findings.append(finding)
                self._repairs[repo_id] += 1
                if trigger in (HealthTrigger.SCHEDULE, HealthTrigger.FILE_CHANGE):
                    self._untold.setdefault(repo_id, []).append(finding)
        return result

    def _repair(
        self, repo_id: str, revision: str, report: IntegrityReport | None, on_event: EventListener | None
    ) -> RepairReport:
        manifest = self.manifest(repo_id, revision)
        before = report or damage(self.cache, manifest, list(manifest.files), workers=None)
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


def damage(
    cache: HubCache, manifest: RevisionManifest, hashed: list[ManifestEntry], *, workers: int | None = 1
) -> IntegrityReport:
    """What is damaged in a revision now: the quick check of every file (which says *truncated* where it can)
    plus the hashes of ``hashed`` that it did not already find bad, on ``workers`` threads (None: every core)."""
    quick = quick_check(cache, manifest)
    bad = {b.path: b for b in quick.bad}
    rest = tuple(e for e in hashed if e.path not in bad)
    if rest:
        subset = RevisionManifest(manifest.repo_id, manifest.commit, rest)
        for found in full_check(cache, subset, workers=workers).bad:
            bad[found.path] = found
    return IntegrityReport(
        manifest.repo_id,
        manifest.commit,
        CheckLevel.FULL if len(hashed) == len(manifest.files) else CheckLevel.QUICK,
        len(manifest.files),
        quick.bytes_checked,
        quick.seconds,
        tuple(bad[e.path] for e in manifest.files if e.path in bad),
    )


Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode: any write, rename or touch changes one


class HealthWatch:
    """Re-checks every installed model in the background and repairs what it finds, without the worker.

    Every ``poll_s`` (at most 2 s, at most ``interval_s``) it compares each snapshot file's size, mtime, ctime and
    inode with the last look — a few ``stat`` calls per model — and hashes a file that changed (a byte flipped in
    place, even with its mtime put back, changes its ctime); every ``interval_s`` it runs the quick check of every
    installed model (sizes, safetensors headers). Damage is repaired once it has stayed as found for one more poll,
    so a file still being written is not judged, and a request that meets the damage first repairs it on its own
    path (the recovery engine counts and reports it) instead of racing the watch. Repair is the store's: each
    damaged file is rebuilt or re-fetched aside and renamed over the blob, so a generation running meanwhile keeps
    reading the file it opened; the next request of the model loads it again. Damage a repair could not fix (the
    hub unreachable) is recorded once and tried again only when the files change. ``interval_s`` 0: off.
    """

    def __init__(self, health: ModelHealthMonitor, interval_s: float, *, poll_s: float | None = None) -> None:
        if interval_s < 0:
            raise ValueError(f"`interval_s` must be >= 0 (got {interval_s!r})")
        self.health, self.interval_s = health, interval_s
        self.poll_s = poll_s if poll_s is not None else min(interval_s, 2.0)
        self._stamps: dict[tuple[str, str], Stamp | None] = {}
        self._pending: dict[tuple[str, str], tuple[HealthTrigger, dict[str, Stamp | None]]] = {}
        self._failed: dict[tuple[str, str], frozenset[tuple[str, Stamp | None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Take the files' current state as the baseline and watch from now on (a no-op when off or running)."""
        if self.interval_s <= 0 or self.running:
            return
        self._stop.clear()
        for manifest in self.health.installed():
            self._changed(manifest)
        self._thread = threading.Thread(target=self._loop, name="kintsugi-health-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching; a repair under way finishes first (it is atomic either way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _loop(self) -> None:
        next_check = time.monotonic() + self.interval_s
        while not self._stop.wait(self.poll_s):
            scheduled = time.monotonic() >= next_check
            if scheduled:
                next_check = time.monotonic() + self.interval_s
            try:
                self.poll(scheduled=scheduled)
            except Exception:  # a model deleted under our feet, a state file being rewritten: look again next time
                _LOG.exception("health watch pass failed; trying again at the next poll")

    def poll(self, *, scheduled: bool = False) -> list[RepairReport]:
        """One pass: repair damage found at the previous pass that is still there, then look for new damage
        (changed files are hashed; with ``scheduled`` every model is quick-checked). Returns the repairs made."""
        repairs = []
        for manifest in self.health.installed():
            key = (manifest.repo_id, manifest.commit)
            changed = self._changed(manifest)
            pending = self._pending.pop(key, None)
            if pending is not None and not changed & set(pending[1]):
                repair = self._repair(manifest, pending)
                if repair is not None:
                    repairs.append(repair)
                continue
            if changed or scheduled:
                self._look(manifest, changed, HealthTrigger.FILE_CHANGE if changed else HealthTrigger.SCHEDULE)
        return repairs

    def _changed(self, manifest: RevisionManifest) -> set[str]:
        """Paths whose blob's stamp differs from the last look (a file seen for the first time is not a change)."""
        changed = set()
        for entry in manifest.files:
            key, now = (manifest.repo_id, entry.blob_name), self._stamp(manifest.repo_id, entry.blob_name)
            if key in self._stamps and self._stamps[key] != now:
                changed.add(entry.path)
            self._stamps[key] = now
        return changed

    def _stamp(self, repo_id: str, blob_name: str) -> Stamp | None:
        try:
            st = os.stat(self.health.cache.blob_path(repo_id, blob_name))
        except FileNotFoundError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def _look(self, manifest: RevisionManifest, changed: set[str], trigger: HealthTrigger) -> None:
        found = damage(self.health.cache, manifest, [e for e in manifest.files if e.path in changed])
        key = (manifest.repo_id, manifest.commit)
        if found.ok:
            self._failed.pop(key, None)
            return
        stamps = {path: self._stamps.get((key[0], manifest.entry(path).blob_name)) for path in found.bad_paths}
        if self._failed.get(key) == frozenset(stamps.items()):
            return  # the same damage a repair could not fix: recorded once, tried again when the files change
        self._pending[key] = (trigger, stamps)

    def _repair(
        self, manifest: RevisionManifest, pending: tuple[HealthTrigger, dict[str, Stamp | None]]
    ) -> RepairReport | None:
        trigger, stamps = pending
        entries = [e for e in manifest.files if e.path in stamps]
        found = damage(self.health.cache, manifest, entries)  # a request may have repaired it meanwhile
        if found.ok:
            return None
        repair = self.health.repair(manifest.repo_id, manifest.commit, report=found, trigger=trigger)
        key = (manifest.repo_id, manifest.commit)
        self._changed(manifest)  # the repaired blobs are new files: the baseline, not a change
        if repair.ok:
            self._failed.pop(key, None)
        else:
            self._failed[key] = frozenset(stamps.items())
        return repair


def _offline_repair_steps(repo_id: str, commit: str, files: tuple[str, ...]) -> tuple[str, ...]:
    return (
        "Reconnect to the network (and unset HF_HUB_OFFLINE if it is set).",
        f"Then repair again, or run: hf download {repo_id} {' '.join(files)} --revision {commit} --force-download",
        "Until then, choose one of the suggested models that is already downloaded.",
    )
