"""Quick and full checks on real damaged files, and repair that re-fetches only what failed."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from huggingface_hub import constants

from components.chaos.loopback_hub import HubServer
from components.store.availability import ModelStatus
from components.store.integrity import FileProblem, VerifyProgress, quick_check, safetensors_problem
from components.store.model_store import ModelStore
from recovery.errors import CorruptModelError
from tests.store.conftest import REPO, WEIGHTS


def weight_blob(store: ModelStore) -> Path:
    return (store.cache.snapshot_dir(REPO, store.cache.resolve(REPO, "main")) / WEIGHTS).resolve()


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path, keep: int) -> None:
    with path.open("r+b") as f:
        f.truncate(keep)


@pytest.fixture
def downloaded(store: ModelStore, hub: HubServer) -> ModelStore:
    store.download(REPO)
    hub.clear()
    return store


def test_quick_check_catches_truncation(downloaded: ModelStore) -> None:
    """A truncated weight blob fails the quick check as a size mismatch, without hashing anything."""
    truncate(weight_blob(downloaded), 100_000)
    report = quick_check(downloaded.cache, downloaded.health.manifest(REPO))
    assert [(b.path, b.problem) for b in report.bad] == [(WEIGHTS, FileProblem.SIZE_MISMATCH)]


def test_quick_check_catches_a_byte_written_since_verification(downloaded: ModelStore) -> None:
    """A byte changed in place keeps sizes and headers intact, but the file's record changed since it was
    verified: the quick check hashes that file again and names it."""
    flip_byte(weight_blob(downloaded), 400_000)
    report = quick_check(downloaded.cache, downloaded.health.manifest(REPO))
    assert [(b.path, b.problem) for b in report.bad] == [(WEIGHTS, FileProblem.HASH_MISMATCH)]
    with pytest.raises(CorruptModelError) as info:
        downloaded.health.before_load(REPO)
    assert info.value.files == [WEIGHTS]


def test_quick_check_misses_silent_bit_rot_that_the_full_check_catches(downloaded: ModelStore) -> None:
    """A flipped byte with size and modification time as verified (bit rot on the disk) leaves the quick check
    nothing to notice; only the full sha256 check sees it."""
    blob = weight_blob(downloaded)
    before = blob.stat()
    flip_byte(blob, 400_000)
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert quick_check(downloaded.cache, downloaded.health.manifest(REPO)).ok
    report = downloaded.health.verify(REPO)
    assert [(b.path, b.problem) for b in report.bad] == [(WEIGHTS, FileProblem.HASH_MISMATCH)]
    assert downloaded.availability.availability(REPO).status is ModelStatus.PRESENT_UNVERIFIED


def test_a_file_only_touched_is_hashed_once_and_stays_verified(downloaded: ModelStore) -> None:
    """A new modification time with the same bytes: the quick check hashes the file, finds it intact and renews
    its record, so the revision is still verified and the next quick check hashes nothing."""
    os.utime(weight_blob(downloaded))
    manifest = downloaded.health.manifest(REPO)
    assert [e.path for e in downloaded.cache.changed_since_verified(manifest)] == [WEIGHTS]
    assert quick_check(downloaded.cache, manifest).ok
    assert downloaded.cache.changed_since_verified(manifest) == []
    assert downloaded.availability.availability(REPO).status is ModelStatus.VERIFIED


def test_health_monitor_refuses_to_load_a_truncated_model(downloaded: ModelStore) -> None:
    """before_load raises CorruptModelError naming the damaged file."""
    truncate(weight_blob(downloaded), 1000)
    with pytest.raises(CorruptModelError) as info:
        downloaded.health.before_load(REPO)
    assert info.value.files == [WEIGHTS]
    assert downloaded.availability.availability(REPO).status is ModelStatus.CORRUPT


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_repair_refetches_only_the_damaged_blob(downloaded: ModelStore, hub: HubServer, damage: str) -> None:
    """Repair downloads just the bad file (request log), swaps it in, and the revision verifies again."""
    blob = weight_blob(downloaded)
    truncate(blob, 50_000) if damage == "truncate" else flip_byte(blob, 300_000)
    report = downloaded.health.repair(REPO)
    assert report.ok and report.files == (WEIGHTS,)
    assert [r.filename for r in hub.fetched()] == [WEIGHTS]
    assert downloaded.health.verify(REPO).ok


def test_repair_offline_says_so_with_the_exact_step(
    downloaded: ModelStore, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, a repair reports failure with a reconnect step and the exact download command."""
    flip_byte(weight_blob(downloaded), 300_000)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    report = downloaded.health.repair(REPO)
    assert not report.ok and not hub.fetched()
    assert any(f"hf download {REPO} {WEIGHTS} --revision {report.commit}" in step for step in report.steps)


def test_ensure_repairs_a_truncated_model_before_returning_it(downloaded: ModelStore, hub: HubServer) -> None:
    """ensure() finds the truncation with the quick check and re-fetches that one file."""
    truncate(weight_blob(downloaded), 10)
    snapshot = downloaded.ensure(REPO)
    assert (snapshot / WEIGHTS).stat().st_size == len(hub.file_bytes(REPO, WEIGHTS))
    assert [r.filename for r in hub.fetched()] == [WEIGHTS]


def test_full_check_reports_progress_up_to_the_total(downloaded: ModelStore) -> None:
    """The full check streams progress events whose last count equals the bytes hashed."""
    seen: list[VerifyProgress] = []
    report = downloaded.health.verify(REPO, on_progress=seen.append)
    assert report.ok and seen[-1].bytes_done == seen[-1].bytes_total == report.bytes_checked


def _safetensors(header: dict, data: bytes, declared: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", declared if declared is not None else len(raw)) + raw + data


@pytest.mark.parametrize(
    ("blob", "fragment"),
    [
        (_safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16), None),
        (_safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "spans bytes"),
        (_safetensors({}, b"", declared=10**9), "does not fit"),
        (b"\x05\0\0\0\0\0\0\0{bad}", "not valid JSON"),
        (_safetensors({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16), "bytes for shape"),
        (b"\0\0", "no header"),
    ],
)
def test_safetensors_header_check(tmp_path: Path, blob: bytes, fragment: str | None) -> None:
    """The header check accepts a well-formed file and names each kind of damage."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob)
    problem = safetensors_problem(path, len(blob))
    assert problem is None if fragment is None else fragment in (problem or "")
