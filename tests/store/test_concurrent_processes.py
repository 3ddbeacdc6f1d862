"""Store actions on one model from two processes sharing one cache, with kill -9 in between.

Each process is a child forked by ``KillRunner`` with its own ``ModelStore`` (its own state folder, as two apps with
their own data folders have) over the same hub cache; the per-model lock and the "in use" mark live in the cache, so
they see each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.chaos.loopback_hub import Fault, HubServer
from components.chaos.store_kills import KillRunner, audit
from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.service import GenerationService
from components.store.cache import HubCache
from components.store.integrity import full_check
from components.system.locks import lock_owner
from tests.store.conftest import REPO, WEIGHTS, make_model_folder


@pytest.fixture(scope="module")
def runner() -> Iterator[KillRunner]:
    with KillRunner() as kill_runner:
        yield kill_runner


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("concurrent-model"), seed=1)


@pytest.fixture
def hub(folder: Path) -> Iterator[HubServer]:
    """The model on a loopback hub, weights at 2 MB/s (a download lasts long enough for the other process)."""
    with HubServer() as server:
        server.add_revision(REPO, folder)
        server.inject(Fault(kind="throttle", path=".safetensors", times=None, bytes_per_s=2_000_000))
        yield server


def app(tmp_path: Path, hub: HubServer, name: str, action: str, **extra: Any) -> dict[str, Any]:
    """One app process's action: the shared cache, its own state folder."""
    return {
        "action": action,
        "cache": str(tmp_path / "cache"),
        "state": str(tmp_path / f"state-{name}"),
        "endpoint": hub.url,
        "repo": REPO,
        **extra,
    }


def served_bytes(hub: HubServer) -> int:
    return sum(r.body_bytes for r in hub.fetched() if r.filename)


def total_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def sound(tmp_path: Path, state: str = "a") -> None:
    cache = HubCache(tmp_path / "cache", tmp_path / f"state-{state}")
    commit = cache.resolve(REPO, "main")
    assert commit is not None
    manifest = cache.manifest(REPO, commit)
    assert manifest is not None and full_check(cache, manifest).ok
    assert audit(tmp_path / "cache", tmp_path / f"state-{state}").ok


def test_two_processes_downloading_one_model_fetch_each_file_once(
    runner: KillRunner, hub: HubServer, folder: Path, tmp_path: Path
) -> None:
    """Two apps download the same model at once: one waits for the other and finds the files; bytes served ≈ 1×."""
    first = runner.start(app(tmp_path, hub, "a", "download"))
    second = runner.start(app(tmp_path, hub, "b", "download"))
    assert runner.join(first).returncode == 0
    assert runner.join(second).returncode == 0
    assert served_bytes(hub) <= 1.1 * total_bytes(folder)
    sound(tmp_path)


def test_download_killed_while_another_process_waits_is_taken_over_and_resumed(
    runner: KillRunner, hub: HubServer, folder: Path, tmp_path: Path
) -> None:
    """kill -9 of the downloading app: the waiting one takes its lock over and resumes its partial file."""
    cache = HubCache(tmp_path / "cache")
    hub.clear()
    hub.inject(Fault(kind="throttle", path=".safetensors", times=None, bytes_per_s=1_000_000))
    first = runner.start(app(tmp_path, hub, "a", "download"))
    wait_for(lambda: sum(cache.partial_bytes(REPO).values()) > 100_000)
    second = runner.start(app(tmp_path, hub, "b", "download"))
    time.sleep(0.1)  # the second asks the hub for the manifest, then waits for the lock
    assert lock_owner(cache.model_lock(REPO).path) == first
    assert runner.kill(first).killed
    assert runner.join(second).returncode == 0
    assert any(r.range for r in hub.fetched() if r.filename)  # resumed, not restarted
    # what the killed process had received but not written is lost with it (~0.1 s at 1 MB/s at most)
    assert served_bytes(hub) <= 1.25 * total_bytes(folder)
    sound(tmp_path, "b")


def test_cleanup_never_deletes_a_model_another_process_is_using(
    runner: KillRunner, hub: HubServer, tmp_path: Path
) -> None:
    """App A reads the model (in use); app B's clean-up is refused and deletes nothing; once A is killed, the mark
    is gone with it and B's clean-up deletes the model."""
    ready = tmp_path / "ready"
    reader = runner.start(app(tmp_path, hub, "a", "hold", ready_file=str(ready), seconds=60))
    wait_for(ready.exists)
    assert runner.run(app(tmp_path, hub, "b", "cleanup")).returncode == 1  # refused: in use
    assert HubCache(tmp_path / "cache", tmp_path / "state-b").busy(REPO) == f"{REPO} is in use by a generation"
    sound(tmp_path)
    assert runner.kill(reader).killed
    assert runner.run(app(tmp_path, hub, "b", "cleanup")).returncode == 0
    assert HubCache(tmp_path / "cache").resolve(REPO, "main") is None
    assert audit(tmp_path / "cache", tmp_path / "state-b").ok


def test_repair_killed_in_one_process_is_finished_by_the_other(
    runner: KillRunner, hub: HubServer, tmp_path: Path
) -> None:
    """App A repairs a flipped weight and is killed mid-transfer while app B waits to repair it too: B takes the
    lock over, and the model verifies."""
    assert runner.run(app(tmp_path, hub, "a", "download")).returncode == 0
    cache = HubCache(tmp_path / "cache", tmp_path / "state-a")
    commit = cache.resolve(REPO, "main")
    assert commit is not None
    manifest = cache.manifest(REPO, commit)
    assert manifest is not None
    blob = cache.blob_path(REPO, manifest.entry(WEIGHTS).blob_name)
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    first = runner.start(app(tmp_path, hub, "a", "repair"))
    wait_for(lambda: sum(cache.partial_bytes(REPO).values()) > 50_000)
    second = runner.start(app(tmp_path, hub, "b", "repair"))
    time.sleep(0.2)
    assert runner.kill(first).killed
    assert runner.join(second).returncode == 0
    sound(tmp_path)


def test_a_generation_marks_its_model_in_use_for_every_process(offline_service: GenerationService) -> None:
    """While the service generates, a clean-up (from any process on the cache) finds the model in use; after, free."""
    cache = offline_service.store.cache
    request = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 3}
    during = None
    for event in offline_service.generate(request):
        if event.kind == "progress" and during is None:
            during = cache.busy(EMBEDDED_MODEL_ID)
    assert during == f"{EMBEDDED_MODEL_ID} is in use by a generation"
    assert cache.busy(EMBEDDED_MODEL_ID) is None
