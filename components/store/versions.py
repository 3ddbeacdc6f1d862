"""Model versions: safe updates with automatic rollback, rollback on request, and library compatibility.

An update downloads the new revision beside the current one (``refs`` untouched), verifies every hash, switches
``refs/<ref>`` atomically, runs an optional test load, and switches back when anything fails; the previous commit
is remembered so a later rollback is one call. Compatibility compares ``model_index.json`` with the installed
diffusers: a pipeline or component class it lacks, or a ``_diffusers_version`` newer than it, with the
``pip install`` that fixes it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.version import InvalidVersion, Version

from components.store.cache import HubCache
from components.store.download import EnhancedModelDownloader, EventListener
from components.store.integrity import IntegrityReport, full_check
from recovery.errors import (
    CorruptModelError,
    DependencyMissingError,
    ModelCompatibilityError,
    ModelDownloadError,
    ModelVersionError,
)

__all__ = ["CompatibilityReport", "UpdateReport", "UpdateStatus", "VersionManager", "check_compatibility"]

_CHECKED_LIBRARIES = ("diffusers", "transformers")


class UpdateStatus(str, Enum):
    UP_TO_DATE = "up_to_date"
    UPDATED = "updated"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class UpdateReport:
    repo_id: str
    ref: str
    status: UpdateStatus
    previous_commit: str | None
    new_commit: str
    reason: str = ""
    integrity: IntegrityReport | None = None


@dataclass(frozen=True)
class CompatibilityReport:
    """What ``model_index.json`` asks of the installed libraries, and what is missing."""

    pipeline_class: str | None
    model_diffusers_version: str | None
    installed_diffusers: str | None
    missing_classes: tuple[str, ...]
    requirement: str | None

    @property
    def version_newer(self) -> bool:
        return _newer(self.model_diffusers_version, self.installed_diffusers)

    @property
    def ok(self) -> bool:
        return not self.missing_classes and not self.version_newer

    def raise_for_problems(self, model_id: str) -> None:
        """Raise the typed error for the first problem: a newer saved version (which also explains classes this
        diffusers lacks), else a missing class."""
        if self.installed_diffusers is None:
            raise DependencyMissingError(
                "diffusers is not installed",
                package="diffusers",
                install=f"pip install '{self.requirement or 'diffusers'}'",
            )
        if self.version_newer:
            raise ModelVersionError(
                f"{model_id} was saved with diffusers {self.model_diffusers_version}, newer than the installed "
                f"{self.installed_diffusers}; install {self.requirement}",
                model_id=model_id,
                expected=self.requirement,
                found=self.installed_diffusers,
            )
        if self.missing_classes:
            raise ModelCompatibilityError(
                f"{model_id} needs {', '.join(self.missing_classes)}, which diffusers {self.installed_diffusers} "
                f"does not provide; install {self.requirement}",
                model_id=model_id,
                reason=f"missing classes: {', '.join(self.missing_classes)}",
            )


def check_compatibility(snapshot: Path) -> CompatibilityReport:
    """Compare a diffusers model folder's ``model_index.json`` with the installed diffusers/transformers."""
    index = json.loads((snapshot / "model_index.json").read_text())
    installed = _installed("diffusers")
    saved = index.get("_diffusers_version")
    wanted = [("diffusers", index.get("_class_name"))] + [
        tuple(v) for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2
    ]
    missing = tuple(
        f"{lib}.{name}" for lib, name in wanted if lib in _CHECKED_LIBRARIES and name and not _has_class(lib, name)
    )
    requirement = None
    if installed is None or missing or _newer(saved, installed):
        requirement = (
            f"diffusers>={saved}" if _newer(saved, installed) else "diffusers (latest: pip install -U diffusers)"
        )
        if any(m.startswith("transformers.") for m in missing):
            requirement += " and pip install -U transformers"
    return CompatibilityReport(index.get("_class_name"), saved, installed, missing, requirement)


class VersionManager:
    """Update a model's ref to a newer revision safely, and roll back.

    A switch of ``refs/<ref>`` is journaled in the store's state before the ref changes and cleared after; one found
    on a later start (the process died mid-switch) is finished by ``recover``: an update goes back to the revision
    it replaced, a rollback completes. Either way one whole, verified revision is current, never a mix.
    """

    def __init__(self, cache: HubCache, downloader: EnhancedModelDownloader) -> None:
        self.cache, self.downloader = cache, downloader

    def update(
        self,
        repo_id: str,
        ref: str = "main",
        *,
        validate: Callable[[Path], None] | None = None,
        on_event: EventListener | None = None,
    ) -> UpdateReport:
        """Download ``ref``'s newest commit beside the current one, verify, switch, test-load; undo on failure."""
        with self.cache.model_lock(repo_id):
            self.recover(repo_id)
            current = self.cache.resolve(repo_id, ref)
            manifest = self.downloader.remote_manifest(repo_id, ref)
            new = manifest.commit
            if new == current:
                return UpdateReport(repo_id, ref, UpdateStatus.UP_TO_DATE, current, new)
            try:
                self.downloader.download(repo_id, ref, manifest=manifest, set_ref=False, on_event=on_event)
            except (CorruptModelError, ModelDownloadError) as exc:
                return UpdateReport(repo_id, ref, UpdateStatus.ROLLED_BACK, current, new, f"download failed: {exc}")
            integrity = full_check(self.cache, manifest)
            self.cache.mark_verified(manifest, integrity.ok)
            if not integrity.ok:
                return UpdateReport(
                    repo_id,
                    ref,
                    UpdateStatus.ROLLED_BACK,
                    current,
                    new,
                    f"verification failed: {', '.join(integrity.bad_paths)}",
                    integrity,
                )
            self.cache.begin_switch(repo_id, ref, "update", current, new)
            self.cache.set_ref(repo_id, ref, new)
            if validate is not None:
                try:
                    validate(self.cache.snapshot_dir(repo_id, new))
                except Exception as exc:  # any failure of the test load means: go back
                    self.recover(repo_id)
                    return UpdateReport(
                        repo_id,
                        ref,
                        UpdateStatus.ROLLED_BACK,
                        current,
                        new,
                        f"test load failed: {type(exc).__name__}: {exc}",
                        integrity,
                    )
            self.cache.end_switch(repo_id, ref)
            return UpdateReport(repo_id, ref, UpdateStatus.UPDATED, current, new, integrity=integrity)

    def rollback(self, repo_id: str, ref: str = "main") -> str:
        """Point ``ref`` back at the commit it had before the last update; returns that commit."""
        with self.cache.model_lock(repo_id):
            self.recover(repo_id)
            history = self.cache.previous(repo_id, ref)
            previous = history[-1] if history else None
            if previous is None or not self.cache.snapshot_dir(repo_id, previous).is_dir():
                raise ModelVersionError(
                    f"{repo_id}: no earlier revision of {ref!r} is kept to roll back to",
                    model_id=repo_id,
                    expected="a previous revision",
                    found=None,
                )
            self.cache.begin_switch(repo_id, ref, "rollback", self.cache.resolve(repo_id, ref), previous)
            self.cache.set_ref(repo_id, ref, previous)
            self.cache.end_switch(repo_id, ref, forget=previous)
            return previous

    def recover(self, repo_id: str) -> dict[str, str]:
        """Finish the ref switches a dead process left (call with the model's lock held, or through
        ``recover_all``): an update is undone, a rollback completed. Returns the commit each ref is now at."""
        settled = {}
        for ref, switch in self.cache.switches(repo_id).items():
            source, target = switch.get("from"), switch["to"]
            back = source if switch["kind"] == "update" else target
            if back is None or not self.cache.snapshot_dir(repo_id, back).is_dir():
                back = target  # a first install has nothing to go back to: its verified revision stays
            self.cache.set_ref(repo_id, ref, back)
            self.cache.end_switch(repo_id, ref, forget=back)
            settled[ref] = back
        return settled

    def recover_all(self) -> dict[str, dict[str, str]]:
        """``recover`` every model with an unfinished switch whose lock is free (a live switch is left alone)."""
        settled = {}
        for repo_id in self.cache.repos_with_switches():
            lock = self.cache.model_lock(repo_id)
            if lock.acquire(timeout=0):
                try:
                    settled[repo_id] = self.recover(repo_id)
                finally:
                    lock.release()
        return settled


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _has_class(library: str, name: str) -> bool:
    try:
        module = importlib.import_module(library)
    except ImportError:
        return False
    lazy = getattr(module, "_class_to_module", None)  # diffusers/transformers: names known without importing
    if isinstance(lazy, dict) and name in lazy:
        return True
    return hasattr(module, name)


def _newer(saved: str | None, installed: str | None) -> bool:
    if saved is None or installed is None:
        return False
    try:
        return Version(saved) > Version(installed)
    except InvalidVersion:
        return False
