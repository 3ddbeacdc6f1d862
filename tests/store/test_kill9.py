"""kill -9 at random points of every store action (seeded, bounded), then a restart: the cache stays sound.

Each action runs in a child forked by ``KillRunner`` against a loopback hub (weights throttled so a kill lands inside
a transfer) and is killed with SIGKILL after a seeded random delay within its measured duration. After every kill
``audit`` must find: no revision reported verified that fails a full check, no half-written file under a final name,
refs only at the allowed commits, no lock that blocks; after the restart the action completes and the current
revision passes a full check.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.chaos.loopback_hub import Fault, HubServer
from components.chaos.store_kills import ActionOutcome, KillRunner, StoreAudit, audit
from components.store.cache import HubCache
from components.store.integrity import full_check
from tests.store.conftest import REPO, WEIGHTS, make_model_folder

KILLS = 8  # per action; every delay drawn from one seeded generator per test


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kill9-models")
    return make_model_folder(root / "v1", seed=1), make_model_folder(root / "v2", seed=2)


@pytest.fixture(scope="module")
def runner() -> Iterator[KillRunner]:
    with KillRunner() as kill_runner:
        yield kill_runner


@pytest.fixture
def served(folders: tuple[Path, Path]) -> Iterator[tuple[HubServer, str, str]]:
    """The hub with v1 as ``main`` and v2 as a later commit (not yet main); weights sent at 3 MB/s."""
    with HubServer() as hub:
        old = hub.add_revision(REPO, folders[0])
        new = hub.add_revision(REPO, folders[1], ref=None)
        hub.inject(Fault(kind="throttle", path=".safetensors", times=None, bytes_per_s=3_000_000))
        yield hub, old, new


def spec(tmp_path: Path, hub: HubServer, action: str, **extra: Any) -> dict[str, Any]:
    return {
        "action": action,
        "cache": str(tmp_path / "cache"),
        "state": str(tmp_path / "state"),
        "endpoint": hub.url,
        "repo": REPO,
        **extra,
    }


def checked(tmp_path: Path, allowed: set[str] | None = None, *, damaged: set[str] = frozenset()) -> StoreAudit:
    """The audit after a kill; ``damaged`` blobs are the ones the test broke on purpose (repair not done yet)."""
    report = audit(tmp_path / "cache", tmp_path / "state", {REPO: allowed} if allowed is not None else None)
    assert not report.verified_failing, report
    assert set(report.corrupt_blobs) <= {f"{REPO}/blobs/{b}" for b in damaged}, report
    assert not report.dangling_links, report
    assert not report.bad_refs, report
    assert not report.stuck_locks, report
    return report


def current_is_sound(tmp_path: Path, commit: str) -> None:
    cache = HubCache(tmp_path / "cache", tmp_path / "state")
    assert cache.resolve(REPO, "main") == commit
    manifest = cache.manifest(REPO, commit)
    assert manifest is not None and full_check(cache, manifest).ok


def finish(runner: KillRunner, job: dict[str, Any]) -> ActionOutcome:
    outcome = runner.run(job)
    assert outcome.returncode == 0, outcome
    return outcome


def test_download_killed_at_random_points_resumes_to_a_verified_revision(
    runner: KillRunner, served: tuple[HubServer, str, str], tmp_path: Path
) -> None:
    """Download killed 8 times: after each kill the cache is sound; the restart finishes and verifies."""
    hub, old, _new = served
    job = spec(tmp_path, hub, "download")
    duration = finish(runner, job).seconds
    rng, kills = random.Random(18_2), 0
    for _ in range(KILLS):
        shutil.rmtree(tmp_path / "cache")  # from nothing again, partial files of the last round gone too
        for _round in range(2):  # killed, then killed again while resuming
            kills += runner.run(job, kill_after=rng.uniform(0.0, duration)).killed
            checked(tmp_path, {old})
        finish(runner, job)
        checked(tmp_path, {old})
        current_is_sound(tmp_path, old)
    assert kills >= KILLS  # most delays fall inside the action


def test_repair_killed_at_random_points_leaves_damage_or_the_good_file(
    runner: KillRunner, served: tuple[HubServer, str, str], tmp_path: Path
) -> None:
    """Repair of a flipped weight killed 8 times: the damaged file is replaced whole or not at all, never
    reported verified while damaged; the restart repairs it."""
    hub, old, _new = served
    finish(runner, spec(tmp_path, hub, "download"))
    cache = HubCache(tmp_path / "cache", tmp_path / "state")
    manifest = cache.manifest(REPO, old)
    assert manifest is not None
    blob = cache.blob_path(REPO, manifest.entry(WEIGHTS).blob_name)
    job = spec(tmp_path, hub, "repair")
    rng, kills, duration = random.Random(18_3), 0, None
    for _ in range(KILLS + 1):
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))  # a flipped byte in place: only a hash finds it
        if duration is None:
            duration = finish(runner, job).seconds  # the first round measures how long a repair takes
        else:
            kills += runner.run(job, kill_after=rng.uniform(0.0, duration)).killed
            checked(tmp_path, {old}, damaged={blob.name})
            finish(runner, job)  # the restart repairs
        checked(tmp_path, {old})
        current_is_sound(tmp_path, old)
    assert kills >= KILLS // 2


def test_update_killed_at_random_points_leaves_the_old_or_the_new_revision(
    runner: KillRunner, served: tuple[HubServer, str, str], tmp_path: Path
) -> None:
    """Update v1 → v2 killed 8 times (while downloading, verifying or switching): ``main`` is v1 or v2, never a mix;
    a switch the kill interrupted is undone at the restart; the next update completes."""
    hub, old, new = served
    finish(runner, spec(tmp_path, hub, "download"))
    hub.repos[REPO].refs["main"] = new
    job = spec(tmp_path, hub, "update")
    drop_new = spec(tmp_path, hub, "cleanup", bytes=1)  # the detached v2 after a rollback: the oldest to go
    duration = finish(runner, job).seconds
    rng, kills = random.Random(18_4), 0
    for _ in range(KILLS):
        finish(runner, spec(tmp_path, hub, "rollback"))
        finish(runner, drop_new)  # so the next update downloads again
        assert not HubCache(tmp_path / "cache").snapshot_dir(REPO, new).exists()
        kills += runner.run(job, kill_after=rng.uniform(0.0, duration)).killed
        checked(tmp_path, {old, new})
        finish(runner, spec(tmp_path, hub, "open"))  # the restart: an interrupted switch is settled
        assert not HubCache(tmp_path / "cache", tmp_path / "state").switches(REPO)
        finish(runner, job)
        checked(tmp_path, {new})
        current_is_sound(tmp_path, new)
    assert kills >= KILLS // 2


def test_update_killed_during_its_test_load_goes_back_to_the_old_revision(
    runner: KillRunner, served: tuple[HubServer, str, str], tmp_path: Path
) -> None:
    """Killed while the new revision's test load runs (``main`` already switched): the restart puts v1 back."""
    hub, old, new = served
    finish(runner, spec(tmp_path, hub, "download"))
    hub.repos[REPO].refs["main"] = new
    outcome = runner.run(spec(tmp_path, hub, "update", validate_seconds=30), kill_after=3.0)
    assert outcome.killed
    assert HubCache(tmp_path / "cache").resolve(REPO, "main") == new  # switched, test load unfinished
    checked(tmp_path, {old, new})
    finish(runner, spec(tmp_path, hub, "open"))
    checked(tmp_path, {old})
    current_is_sound(tmp_path, old)
    assert HubCache(tmp_path / "cache", tmp_path / "state").previous(REPO, "main") == []


def test_cleanup_killed_at_random_points_never_leaves_half_a_revision(
    runner: KillRunner, served: tuple[HubServer, str, str], tmp_path: Path
) -> None:
    """Deleting the whole model killed 8 times: it is either there and sound or gone from the refs; the restart
    removes what was set aside and the next clean-up finishes."""
    hub, old, _new = served
    job = spec(tmp_path, hub, "cleanup")
    download = spec(tmp_path, hub, "download")
    finish(runner, download)
    duration = finish(runner, job).seconds
    rng = random.Random(18_5)
    for _ in range(KILLS):
        finish(runner, download)
        runner.run(job, kill_after=rng.uniform(0.0, duration))
        checked(tmp_path, {old})
        finish(runner, spec(tmp_path, hub, "open"))
        assert not any((tmp_path / "cache" / ".locks" / "kintsugi" / "trash").glob("*"))
        finish(runner, job)
        assert HubCache(tmp_path / "cache").resolve(REPO, "main") is None
        checked(tmp_path)


def test_local_install_killed_at_random_points_is_rebuilt_whole(
    runner: KillRunner, served: tuple[HubServer, str, str], folders: tuple[Path, Path], tmp_path: Path
) -> None:
    """The embedded model's way into the cache (``import_folder``) killed 8 times: never a current revision with
    missing or partial files; the restart installs it verified."""
    hub, _old, _new = served
    job = spec(tmp_path, hub, "install", source=str(folders[0]))
    duration = finish(runner, job).seconds
    rng = random.Random(18_6)
    for _ in range(KILLS):
        shutil.rmtree(tmp_path / "cache")
        shutil.rmtree(tmp_path / "state")
        runner.run(job, kill_after=rng.uniform(0.0, duration))
        report = checked(tmp_path)
        finish(runner, job)
        cache = HubCache(tmp_path / "cache", tmp_path / "state")
        commit = cache.resolve(REPO, "main")
        assert commit is not None
        manifest = cache.manifest(REPO, commit)
        assert manifest is not None and cache.is_verified(manifest) and full_check(cache, manifest).ok
        assert set(report.refs.values()) <= {commit}
