"""The Hugging Face cache as the store's disk: layout, revision manifests, and the store's own small state.

Files live exactly where ``huggingface_hub`` puts them (``models--org--name/{blobs,snapshots,refs}``), so a model
fetched here loads with ``from_pretrained(repo_id)`` and one fetched by the hub client is visible here. What the
cache cannot say by itself (the expected size and hash of every file of a revision, which revisions were fully
verified, which commit a ref pointed to before an update) is kept in one JSON file per repo under ``state_dir``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import DeleteCacheStrategy, constants
from huggingface_hub.file_download import repo_folder_name

from components.system import locks
from components.system.files import hash_file, replacing, write_text_atomic
from recovery.errors import StorageFullError
from recovery.messages import format_bytes

__all__ = ["HubCache", "ManifestEntry", "RevisionManifest", "is_commit_hash", "LFS_SUFFIXES"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".msgpack", ".h5")
_LFS_MIN_SIZE = 10 * 1024 * 1024
_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_commit_hash(revision: str) -> bool:
    return _COMMIT.fullmatch(revision) is not None


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a revision as the hub describes it: size, git blob id, and sha256 when stored with LFS."""

    path: str
    size: int
    blob_id: str
    sha256: str | None = None

    @property
    def blob_name(self) -> str:
        """The name of its blob in the cache (the hub's ETag): sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class RevisionManifest:
    """Every file of one commit of a repo, with what it must contain."""

    repo_id: str
    commit: str
    files: tuple[ManifestEntry, ...]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def entry(self, path: str) -> ManifestEntry:
        return next(f for f in self.files if f.path == path)

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.files]

    @classmethod
    def from_json(cls, repo_id: str, commit: str, rows: Iterable[dict[str, Any]]) -> RevisionManifest:
        return cls(repo_id, commit, tuple(ManifestEntry(**row) for row in rows))


class HubCache:
    """Paths and bookkeeping for the hub cache at ``cache_dir`` (default: ``HF_HUB_CACHE``)."""

    def __init__(self, cache_dir: str | Path | None = None, state_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir or constants.HF_HUB_CACHE)
        default_state = Path(os.environ.get("KINTSUGI_DATA_DIR", Path(constants.HF_HOME))) / "kintsugi-store"
        self.state_dir = Path(state_dir) if state_dir is not None else default_state
        self._lock = threading.RLock()

    # -- layout ----------------------------------------------------------------------------------------------
    @property
    def locks_dir(self) -> Path:
        """Our per-model lock files, in the cache itself: every process using this cache sees them."""
        return self.cache_dir / ".locks" / "kintsugi"

    def repo_dir(self, repo_id: str) -> Path:
        return self.cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")

    def blob_path(self, repo_id: str, blob_name: str) -> Path:
        return self.repo_dir(repo_id) / "blobs" / blob_name

    def incomplete_path(self, repo_id: str, blob_name: str) -> Path:
        """Where a transfer of this blob accumulates; kept across attempts so a retry resumes with Range."""
        return self.repo_dir(repo_id) / "blobs" / f"{blob_name}.incomplete"

    def snapshot_dir(self, repo_id: str, commit: str) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / commit

    def resolve(self, repo_id: str, revision: str) -> str | None:
        """The commit a revision names locally: a commit hash with a snapshot, or the content of ``refs/<rev>``."""
        if is_commit_hash(revision):
            return revision if self.snapshot_dir(repo_id, revision).is_dir() else None
        ref = self.repo_dir(repo_id) / "refs" / revision
        return ref.read_text().strip() if ref.is_file() else None

    def set_ref(self, repo_id: str, ref: str, commit: str) -> None:
        """Point ``refs/<ref>`` at ``commit`` atomically."""
        write_text_atomic(self.repo_dir(repo_id) / "refs" / ref, commit)

    def link(self, repo_id: str, commit: str, entry: ManifestEntry) -> Path:
        """Make ``snapshots/<commit>/<path>`` a relative symlink to the entry's blob (as the hub does)."""
        target = self.snapshot_dir(repo_id, commit) / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        relative = os.path.relpath(self.blob_path(repo_id, entry.blob_name), target.parent)
        if target.is_symlink() and os.readlink(target) == relative:
            return target
        with replacing(target) as partial:
            os.symlink(relative, partial)
        return target

    def partial_bytes(self, repo_id: str) -> dict[str, int]:
        """Bytes already in the resumable ``<blob>.incomplete`` files of this repo, by blob name (a file finished and
        renamed while this looks is not counted)."""
        blobs = self.repo_dir(repo_id) / "blobs"
        if not blobs.is_dir():
            return {}
        sizes: dict[str, int] = {}
        for path in blobs.glob("*.incomplete"):
            if path.name.startswith("."):  # a file being written beside its name (components.system.files)
                continue
            try:
                sizes[path.name.split(".")[0]] = path.stat().st_size
            except FileNotFoundError:
                continue
        return sizes

    def snapshot_commits(self, repo_id: str) -> list[str]:
        snapshots = self.repo_dir(repo_id) / "snapshots"
        return sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []

    # -- cross-process locks (components.system.locks) -----------------------------------------------------------
    def model_lock(self, repo_id: str) -> locks.ModelLock:
        """The writer's lock of one model: download, repair, update and clean-up take it."""
        return locks.ModelLock(self.locks_dir / f"{repo_folder_name(repo_id=repo_id, repo_type='model')}.lock")

    def using(self, repo_id: str) -> contextlib.AbstractContextManager[None]:
        """The shared "in use" mark a generation holds while it reads the model's files."""
        return locks.using(self._use_path(repo_id))

    def claim_unused(self, repo_id: str) -> contextlib.AbstractContextManager[bool]:
        """The "in use" mark taken exclusively, without waiting (True when no one reads the model)."""
        return locks.claim_unused(self._use_path(repo_id))

    def busy(self, repo_id: str) -> str | None:
        """Why a model cannot be deleted now (another process writes or reads it), or None when it can."""
        with self.exclusive([repo_id]) as refused:
            return refused

    @contextmanager
    def exclusive(self, repo_ids: Iterable[str]) -> Iterator[str | None]:
        """Hold the writer's lock and the "in use" mark of every model, without waiting; yields why not (the first
        model that is busy, all released) or None while all are held (a clean-up deletes inside)."""
        with contextlib.ExitStack() as stack:
            for repo_id in sorted(set(repo_ids)):
                lock = self.model_lock(repo_id)
                if not lock.acquire(timeout=0):
                    owner = locks.lock_owner(lock.path)
                    yield f"{repo_id} is being downloaded, repaired or updated" + (
                        f" by process {owner}" if owner is not None else ""
                    )
                    return
                stack.callback(lock.release)
                if not stack.enter_context(self.claim_unused(repo_id)):
                    yield f"{repo_id} is in use by a generation"
                    return
            yield None

    def _use_path(self, repo_id: str) -> Path:
        return self.locks_dir / f"{repo_folder_name(repo_id=repo_id, repo_type='model')}.use"

    # -- deletion ----------------------------------------------------------------------------------------------
    def delete(self, strategy: DeleteCacheStrategy) -> None:
        """Carry out a hub deletion plan in an order a ``kill -9`` cannot turn into damage: refs first (the revision
        stops being current), then each snapshot or repo folder moved aside in one rename, then its blobs; the
        moved-aside folders are removed last (``sweep_trash`` removes what a killed clean-up left)."""
        for ref in strategy.refs:
            ref.unlink(missing_ok=True)
        trash = self.trash_dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for folder in (*strategy.repos, *strategy.snapshots):
            if folder.exists() or folder.is_symlink():
                trash.mkdir(parents=True, exist_ok=True)
                os.replace(folder, trash / f"{len(list(trash.iterdir()))}-{folder.name}")
        for path in strategy.files:  # single snapshot entries whose folder stays
            path.unlink(missing_ok=True)
        for blob in strategy.blobs:
            blob.unlink(missing_ok=True)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep_partials(self, repo_id: str) -> int:
        """Remove the hidden partial files a killed writer left in a repo's folder (a ref, a link, a copied blob
        being written beside its name); call with the model's lock held. The resumable ``<blob>.incomplete`` of a
        download is not hidden and stays. Returns the files removed."""
        removed = 0
        for path in self.repo_dir(repo_id).glob("**/.*.incomplete*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        return removed

    def cached_repos(self) -> list[str]:
        """Models with a folder in the cache."""
        found = sorted(self.cache_dir.glob("models--*")) if self.cache_dir.is_dir() else []
        return [p.name.removeprefix("models--").replace("--", "/") for p in found if p.is_dir()]

    @property
    def trash_dir(self) -> Path:
        """Folders a clean-up moved aside before removing them (one folder per clean-up: ``<pid>-<id>``)."""
        return self.locks_dir / "trash"

    def sweep_trash(self) -> int:
        """Remove what clean-ups that died left aside (a live one's folder is left to it); returns folders removed."""
        removed = 0
        for folder in sorted(self.trash_dir.iterdir()) if self.trash_dir.is_dir() else ():
            pid = folder.name.split("-")[0]
            if pid.isdigit() and locks.pid_alive(int(pid)) and int(pid) != os.getpid():
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed

    # -- manifests -------------------------------------------------------------------------------------------
    def save_manifest(self, manifest: RevisionManifest) -> None:
        with self._state(manifest.repo_id) as state:
            state["manifests"][manifest.commit] = manifest.to_json()

    def manifest(self, repo_id: str, commit: str) -> RevisionManifest | None:
        """The recorded manifest of a commit, else one rebuilt from the snapshot's links (sizes then unknown: -1)."""
        rows = self.read_state(repo_id)["manifests"].get(commit)
        if rows is not None:
            return RevisionManifest.from_json(repo_id, commit, rows)
        snapshot = self.snapshot_dir(repo_id, commit)
        if not snapshot.is_dir():
            return None
        return RevisionManifest(repo_id, commit, tuple(_entries_from_links(snapshot)))

    # -- verification records and ref history ----------------------------------------------------------------
    def blob_stamp(self, repo_id: str, blob_name: str) -> list[int] | None:
        """(size, mtime_ns) of a blob: a verification stays valid only while this is unchanged."""
        try:
            st = self.blob_path(repo_id, blob_name).stat()
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def mark_verified(self, manifest: RevisionManifest, ok: bool) -> None:
        with self._state(manifest.repo_id) as state:
            if ok:
                state["verified"][manifest.commit] = {
                    f.blob_name: self.blob_stamp(manifest.repo_id, f.blob_name) for f in manifest.files
                }
            else:
                state["verified"].pop(manifest.commit, None)

    def changed_since_verified(self, manifest: RevisionManifest) -> list[ManifestEntry]:
        """Entries whose blob's (size, mtime_ns) differs from when the revision was verified (none if never)."""
        stamps = self.read_state(manifest.repo_id)["verified"].get(manifest.commit) or {}
        return [
            f
            for f in manifest.files
            if stamps.get(f.blob_name) is not None
            and stamps[f.blob_name] != self.blob_stamp(manifest.repo_id, f.blob_name)
        ]

    def renew_stamp(self, manifest: RevisionManifest, blob_name: str) -> None:
        """A blob re-hashed and still matching: its verification holds for its new (size, mtime_ns)."""
        with self._state(manifest.repo_id) as state:
            stamps = state["verified"].get(manifest.commit)
            if stamps is not None and blob_name in stamps:
                stamps[blob_name] = self.blob_stamp(manifest.repo_id, blob_name)

    def is_verified(self, manifest: RevisionManifest) -> bool:
        stamps = self.read_state(manifest.repo_id)["verified"].get(manifest.commit)
        return stamps is not None and all(
            stamps.get(f.blob_name) == self.blob_stamp(manifest.repo_id, f.blob_name) for f in manifest.files
        )

    def push_previous(self, repo_id: str, ref: str, commit: str) -> None:
        """Remember that ``ref`` pointed at ``commit`` before an update (for rollback)."""
        with self._state(repo_id) as state:
            state["previous"].setdefault(ref, []).append(commit)

    def pop_previous(self, repo_id: str, ref: str) -> str | None:
        with self._state(repo_id) as state:
            history = state["previous"].get(ref) or []
            return history.pop() if history else None

    def previous(self, repo_id: str, ref: str) -> list[str]:
        return list(self.read_state(repo_id)["previous"].get(ref, []))

    # -- the journal of a ref switch (store.versions): written before ``refs/<ref>`` changes, cleared after ---------
    def begin_switch(self, repo_id: str, ref: str, kind: str, source: str | None, target: str) -> None:
        """Record, in one write, that ``ref`` moves from ``source`` to ``target`` (``kind``: update or rollback);
        an update also remembers ``source`` for a later rollback in the same write."""
        with self._state(repo_id) as state:
            if kind == "update" and source is not None:
                state["previous"].setdefault(ref, []).append(source)
            state["switches"][ref] = {"kind": kind, "from": source, "to": target, "pid": os.getpid()}

    def end_switch(self, repo_id: str, ref: str, *, forget: str | None = None) -> None:
        """Clear the switch record; ``forget`` drops that commit from the top of the rollback history (one write)."""
        with self._state(repo_id) as state:
            history = state["previous"].get(ref) or []
            if forget is not None and history and history[-1] == forget:
                history.pop()
            state["switches"].pop(ref, None)

    def switches(self, repo_id: str) -> dict[str, dict[str, Any]]:
        """Ref switches begun and not finished, by ref (left by a process that died or is still switching)."""
        return dict(self.read_state(repo_id)["switches"])

    def repos_with_switches(self) -> list[str]:
        """Repos whose state records an unfinished ref switch."""
        found = []
        for path in sorted(self.state_dir.glob("models--*.json")) if self.state_dir.is_dir() else ():
            repo_id = path.stem.removeprefix("models--").replace("--", "/")
            if self.switches(repo_id):
                found.append(repo_id)
        return found

    def read_state(self, repo_id: str) -> dict[str, Any]:
        path = self._state_path(repo_id)
        with self._lock:
            state = json.loads(path.read_text()) if path.is_file() else {}
        for key in ("manifests", "verified", "previous", "switches"):
            state.setdefault(key, {})
        return state

    @contextmanager
    def _state(self, repo_id: str) -> Iterator[dict[str, Any]]:
        """Read, change and write back one repo's state; two processes sharing the state folder take turns."""
        path = self._state_path(repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, locks.exclusive(path.with_name(path.name + ".lock")):
            state = self.read_state(repo_id)
            yield state
            try:
                write_text_atomic(path, json.dumps(state, indent=1))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                free = shutil.disk_usage(self.state_dir).free
                raise StorageFullError(
                    f"the disk holding the model store's records is full ({format_bytes(free)} free): {repo_id}'s "
                    "record was not changed (the previous one is intact) and files already downloaded are kept",
                    path=str(self.state_dir),
                    bytes_free=free,
                ) from exc

    def _state_path(self, repo_id: str) -> Path:
        return self.state_dir / f"{repo_folder_name(repo_id=repo_id, repo_type='model')}.json"

    # -- local folders ---------------------------------------------------------------------------------------
    def import_folder(
        self, repo_id: str, folder: Path, *, ref: str = "main", only: Iterable[str] | None = None
    ) -> RevisionManifest:
        """Put a local model folder into the cache as a commit of ``repo_id`` (the embedded model's way in).

        The commit id is derived from the content, so rebuilding the same model gives the same commit. With
        ``only``, just those files are (re)written: the repair path for a model that has no hub to fetch from.
        """
        with self.model_lock(repo_id):
            return self._import_folder(repo_id, folder, ref=ref, only=only)

    def _import_folder(self, repo_id: str, folder: Path, *, ref: str, only: Iterable[str] | None) -> RevisionManifest:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        entries = tuple(_entry_for(p.relative_to(folder).as_posix(), p) for p in files)
        listing = "".join(f"{e.path}\0{e.blob_name}\n" for e in entries)
        manifest = RevisionManifest(repo_id, hashlib.sha1(listing.encode()).hexdigest(), entries)
        wanted = set(only) if only is not None else None
        for entry in entries:
            if wanted is not None and entry.path not in wanted:
                continue
            with replacing(self.blob_path(repo_id, entry.blob_name)) as partial:
                shutil.copyfile(folder / entry.path, partial)
            self.link(repo_id, manifest.commit, entry)
        self.save_manifest(manifest)
        if wanted is None:  # every file was hashed as it was read: verified by construction, before it is current
            self.mark_verified(manifest, True)
        self.set_ref(repo_id, ref, manifest.commit)
        return manifest


def _entry_for(path: str, file: Path) -> ManifestEntry:
    """A manifest entry for a local file, hashed in one streaming pass (git blob id, and sha256 if LFS)."""
    size = file.stat().st_size
    lfs = path.endswith(LFS_SUFFIXES) or size >= _LFS_MIN_SIZE
    digests = hash_file(file, "git", "sha256") if lfs else hash_file(file, "git")
    return ManifestEntry(path, size, digests["git"], digests.get("sha256"))


def _entries_from_links(snapshot: Path) -> Iterator[ManifestEntry]:
    """Entries read from a snapshot's symlinks: the blob name says which hash to expect, the size is unknown."""
    for link in sorted(snapshot.rglob("*")):
        if link.is_dir() and not link.is_symlink():
            continue
        name = Path(os.readlink(link)).name if link.is_symlink() else ""
        path = link.relative_to(snapshot).as_posix()
        if len(name) == 64:
            yield ManifestEntry(path, -1, "", name)
        else:
            yield ManifestEntry(path, -1, name)
