"""The health watch on real damaged files: it notices a change or a scheduled check's finding, repairs from the
loopback hub once the damage has stayed for a poll, and records what it found and did."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from huggingface_hub import constants

from components.chaos.loopback_hub import HubServer
from components.store.health import HealthTrigger, HealthWatch
from components.store.model_store import ModelStore
from tests.store.conftest import REPO, WEIGHTS
from tests.store.test_store_integrity import flip_byte, truncate, weight_blob


@pytest.fixture
def downloaded(store: ModelStore, hub: HubServer) -> ModelStore:
    store.download(REPO)
    hub.clear()
    return store


@pytest.fixture
def watch(downloaded: ModelStore) -> HealthWatch:
    """A watch driven pass by pass (no thread), its baseline taken."""
    watch = HealthWatch(downloaded.health, interval_s=30)
    assert watch.poll() == []
    return watch


@pytest.fixture
def running(downloaded: ModelStore) -> Iterator[HealthWatch]:
    """A started watch with a short interval, closed at the end."""
    watch = HealthWatch(downloaded.health, interval_s=0.2, poll_s=0.05)
    watch.start()
    yield watch
    watch.close()


def _wait_for_finding(store: ModelStore, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not store.health.findings(REPO) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_running_watch_repairs_a_truncated_weight_file(
    downloaded: ModelStore, hub: HubServer, running: HealthWatch
) -> None:
    """A truncation is noticed by the running watch and only that file is re-fetched; the model verifies again."""
    truncate(weight_blob(downloaded), 50_000)
    _wait_for_finding(downloaded)
    (finding,) = downloaded.health.findings(REPO)
    assert finding.trigger is HealthTrigger.FILE_CHANGE and finding.repair.ok and finding.repair.files == (WEIGHTS,)
    assert "truncated" in finding.problems[0] and [r.filename for r in hub.fetched()] == [WEIGHTS]
    assert downloaded.health.verify(REPO).ok


def test_closing_the_watch_stops_its_thread(store: ModelStore) -> None:
    """close() ends the background thread."""
    watch = HealthWatch(store.health, interval_s=0.2, poll_s=0.05)
    watch.start()
    assert watch.running
    watch.close()
    assert not watch.running


def test_interval_zero_turns_the_watch_off(store: ModelStore) -> None:
    """With interval 0 start() starts nothing."""
    watch = HealthWatch(store.health, interval_s=0)
    watch.start()
    assert not watch.running


def test_a_byte_flipped_with_its_mtime_put_back_is_found_by_the_file_poll(
    downloaded: ModelStore, watch: HealthWatch
) -> None:
    """Bit rot the quick check cannot see (size and mtime as verified) still changes the file's ctime: the poll
    hashes that file, and at the next poll repairs it."""
    blob = weight_blob(downloaded)
    before = blob.stat()
    flip_byte(blob, 300_000)
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert watch.poll() == []  # found; judged at the next poll, once it has stayed as found
    (repair,) = watch.poll()
    assert repair.ok and repair.files == (WEIGHTS,)
    assert downloaded.health.findings(REPO)[0].problems == (f"{WEIGHTS}: contents changed (hash mismatch)",)
    assert downloaded.health.verify(REPO).ok


def test_a_scheduled_check_finds_damage_made_before_the_watch_looked(downloaded: ModelStore, hub: HubServer) -> None:
    """A truncation already there when the watch took its baseline is found by the scheduled quick check."""
    truncate(weight_blob(downloaded), 1000)
    watch = HealthWatch(downloaded.health, interval_s=30)
    watch.poll(scheduled=True)
    (repair,) = watch.poll()
    assert repair.ok and downloaded.health.findings(REPO)[0].trigger is HealthTrigger.SCHEDULE
    assert downloaded.health.verify(REPO).ok


def test_damage_a_request_repaired_first_is_not_repaired_again(
    downloaded: ModelStore, hub: HubServer, watch: HealthWatch
) -> None:
    """The watch waits one poll before repairing; a request's ensure() that met the damage meanwhile repaired
    it, so the watch finds nothing left to do: one repair, one fetch."""
    truncate(weight_blob(downloaded), 1000)
    watch.poll()
    downloaded.ensure(REPO)
    assert watch.poll() == [] and watch.poll() == []
    assert [f.trigger for f in downloaded.health.findings(REPO)] == [HealthTrigger.BEFORE_USE]
    assert [r.filename for r in hub.fetched()] == [WEIGHTS] and downloaded.health.verify(REPO).ok


def test_damage_that_cannot_be_repaired_is_recorded_once(
    downloaded: ModelStore, hub: HubServer, watch: HealthWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, the repair fails with its steps; later scheduled checks do not retry the same damage."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    truncate(weight_blob(downloaded), 1000)
    for _ in range(4):
        watch.poll(scheduled=True)
    (finding,) = downloaded.health.findings(REPO)
    assert not finding.repair.ok and not hub.fetched()
    assert "could not be repaired" in finding.sentence() and "Reconnect" in finding.sentence()
    assert downloaded.health.verify(REPO).bad_paths == (WEIGHTS,)


def test_background_repairs_are_told_once_and_count_for_a_reload(downloaded: ModelStore, watch: HealthWatch) -> None:
    """A repair the watch made is handed to the model's next request once, and raises its repair count."""
    truncate(weight_blob(downloaded), 1000)
    watch.poll()
    watch.poll()
    assert downloaded.health.repair_count(REPO) == 1
    assert [f.trigger for f in downloaded.health.untold(REPO)] == [HealthTrigger.FILE_CHANGE]
    assert downloaded.health.untold(REPO) == []
