"""Integrity of a cached revision: a quick check that costs milliseconds and a full, streaming hash check.

Quick: every expected file is present with the expected size, and every ``.safetensors`` header parses and its
tensor offsets exactly fill the file (truncation, a cut header, "incomplete metadata"); a file written to since the
revision was verified (its size or modification time differs from the record) is hashed again — a byte changed in
place is caught before a load, and a file only touched has its record renewed. Full: the sha256 of every
LFS blob against its name/manifest and the git blob id of every small file (a flipped byte, zeroed weights),
hashed across cores with progress. The hub names LFS blobs by their sha256, so a differing hash is proof.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from math import prod
from pathlib import Path

from components.store.cache import HubCache, ManifestEntry, RevisionManifest
from components.system.files import HashName, hash_file

__all__ = [
    "BadFile",
    "CheckLevel",
    "FileProblem",
    "IntegrityReport",
    "VerifyProgress",
    "full_check",
    "hash_blob",
    "quick_check",
    "safetensors_problem",
]

_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
}


class CheckLevel(str, Enum):
    QUICK = "quick"
    FULL = "full"


class FileProblem(str, Enum):
    MISSING = "missing"
    SIZE_MISMATCH = "size_mismatch"
    BAD_HEADER = "bad_safetensors_header"
    HASH_MISMATCH = "hash_mismatch"


@dataclass(frozen=True)
class BadFile:
    """One file that failed a check, with what was expected and what was found."""

    path: str
    blob_name: str
    problem: FileProblem
    detail: str = ""


@dataclass(frozen=True)
class IntegrityReport:
    """Outcome of one check of one revision."""

    repo_id: str
    commit: str
    level: CheckLevel
    files_checked: int
    bytes_checked: int
    seconds: float
    bad: tuple[BadFile, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def bad_paths(self) -> tuple[str, ...]:
        return tuple(b.path for b in self.bad)


@dataclass(frozen=True)
class VerifyProgress:
    """Progress of a full check: bytes hashed so far out of the revision's total."""

    repo_id: str
    commit: str
    bytes_done: int
    bytes_total: int
    path: str


def safetensors_problem(path: Path, size: int) -> str | None:
    """Why a safetensors file is unusable (bad header, offsets past the end, wrong tensor size), or None."""
    if size < 8:
        return f"file of {size} bytes has no header"
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > min(_MAX_HEADER, size - 8):
            return f"header length {header_len} does not fit a file of {size} bytes"
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"header is not valid JSON ({exc})"
    data_len = size - 8 - header_len
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
            shape, dtype = info["shape"], info["dtype"]
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r} has a malformed entry"
        if not 0 <= start <= end <= data_len:
            return f"tensor {name!r} spans bytes {start}-{end} but the data section has {data_len}"
        if dtype in _DTYPE_BYTES and end - start != prod(shape) * _DTYPE_BYTES[dtype]:
            return f"tensor {name!r} has {end - start} bytes for shape {shape} {dtype}"
        end_max = max(end_max, end)
    if end_max != data_len:
        return f"tensors end at byte {end_max} of a {data_len}-byte data section"
    return None


def quick_check(cache: HubCache, manifest: RevisionManifest) -> IntegrityReport:
    """Sizes and safetensors headers of every file of a revision; milliseconds even for multi-GB models."""
    started = time.perf_counter()
    bad: list[BadFile] = []
    checked = 0
    for entry in manifest.files:
        blob = _blob_behind(cache, manifest, entry)
        if blob is None:
            bad.append(BadFile(entry.path, entry.blob_name, FileProblem.MISSING, "no file in the snapshot"))
            continue
        size = blob.stat().st_size
        checked += size
        if entry.size >= 0 and size != entry.size:
            bad.append(
                BadFile(
                    entry.path, entry.blob_name, FileProblem.SIZE_MISMATCH, f"expected {entry.size} bytes, found {size}"
                )
            )
        elif entry.path.endswith(".safetensors") and (problem := safetensors_problem(blob, size)):
            bad.append(BadFile(entry.path, entry.blob_name, FileProblem.BAD_HEADER, problem))
    named = {b.path for b in bad}
    for entry in cache.changed_since_verified(manifest):
        if entry.path not in named and (changed := _rehash(cache, manifest, entry)) is not None:
            bad.append(changed)
    return IntegrityReport(
        manifest.repo_id,
        manifest.commit,
        CheckLevel.QUICK,
        len(manifest.files),
        checked,
        time.perf_counter() - started,
        tuple(bad),
    )


def hash_blob(path: Path, entry: ManifestEntry, on_bytes: Callable[[int], None] | None = None) -> str:
    """The hash the hub names this entry by: sha256 of an LFS file, git blob sha1 of a small one."""
    name: HashName = "sha256" if entry.sha256 is not None else "git"
    return hash_file(path, name, on_bytes=on_bytes)[name]


def full_check(
    cache: HubCache,
    manifest: RevisionManifest,
    *,
    on_progress: Callable[[VerifyProgress], None] | None = None,
    workers: int | None = None,
) -> IntegrityReport:
    """Hash every blob of a revision (in parallel across cores) and compare with the expected hashes. A file
    missing or of the wrong size is reported as such (a truncated file says *truncated*, not a bare hash
    mismatch) and not hashed."""
    started = time.perf_counter()
    quick = quick_check(cache, manifest)
    bad = {b.path: b for b in quick.bad if b.problem in (FileProblem.MISSING, FileProblem.SIZE_MISMATCH)}
    todo = [e for e in manifest.files if e.path not in bad]
    total = sum(_size_of(cache, manifest, e) for e in todo)
    done = 0
    lock = threading.Lock()

    def hash_one(entry: ManifestEntry) -> BadFile | None:
        nonlocal done
        blob = _blob_behind(cache, manifest, entry)
        assert blob is not None

        def advance(n: int) -> None:
            nonlocal done
            with lock:
                done += n
                if on_progress is not None:
                    on_progress(VerifyProgress(manifest.repo_id, manifest.commit, done, total, entry.path))

        actual = hash_blob(blob, entry, advance)
        expected = entry.sha256 or entry.blob_id
        if actual != expected:
            return BadFile(
                entry.path, entry.blob_name, FileProblem.HASH_MISMATCH, f"expected {expected}, computed {actual}"
            )
        return None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for result in pool.map(hash_one, todo):
            if result is not None:
                bad[result.path] = result
    ordered = tuple(bad[e.path] for e in manifest.files if e.path in bad)
    return IntegrityReport(
        manifest.repo_id,
        manifest.commit,
        CheckLevel.FULL,
        len(manifest.files),
        total,
        time.perf_counter() - started,
        ordered,
    )


def _rehash(cache: HubCache, manifest: RevisionManifest, entry: ManifestEntry) -> BadFile | None:
    """Hash one blob written to since verification; renew its record when it still matches."""
    blob = _blob_behind(cache, manifest, entry)
    if blob is None:
        return None
    actual, expected = hash_blob(blob, entry), entry.sha256 or entry.blob_id
    if actual != expected:
        return BadFile(
            entry.path,
            entry.blob_name,
            FileProblem.HASH_MISMATCH,
            f"changed since it was verified: expected {expected}, computed {actual}",
        )
    cache.renew_stamp(manifest, entry.blob_name)
    return None


def _blob_behind(cache: HubCache, manifest: RevisionManifest, entry: ManifestEntry) -> Path | None:
    """The blob a snapshot entry resolves to, or None when the link or the blob is missing."""
    link = cache.snapshot_dir(manifest.repo_id, manifest.commit) / entry.path
    blob = cache.blob_path(manifest.repo_id, entry.blob_name)
    if link.exists() and blob.is_file():
        return blob
    return None


def _size_of(cache: HubCache, manifest: RevisionManifest, entry: ManifestEntry) -> int:
    blob = _blob_behind(cache, manifest, entry)
    return blob.stat().st_size if blob is not None else 0
