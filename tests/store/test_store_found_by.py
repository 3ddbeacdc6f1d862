"""What found damage, when a caller that knows it is not the one repairing: a note taken by the next repair of the
model (loopback hub, a really truncated file)."""

from __future__ import annotations

import pytest

from components.chaos.loopback_hub import HubServer
from components.store.health import HealthTrigger
from components.store.model_store import ModelStore
from tests.store.conftest import REPO
from tests.store.test_store_integrity import truncate, weight_blob


@pytest.fixture
def downloaded(store: ModelStore, hub: HubServer) -> ModelStore:
    store.download(REPO)
    return store


def test_the_next_repair_on_a_requests_path_is_labelled_by_the_note(downloaded: ModelStore) -> None:
    """The engine's repair (no trigger given) names what the service said found the damage."""
    truncate(weight_blob(downloaded), 50_000)
    downloaded.health.found_by(REPO, HealthTrigger.WORKER_CRASH)
    assert downloaded.health.repair(REPO).ok
    (finding,) = downloaded.health.findings(REPO)
    assert finding.trigger is HealthTrigger.WORKER_CRASH and "truncated" in finding.problems[0]


def test_the_note_does_not_outlive_the_repair_it_was_about(downloaded: ModelStore) -> None:
    """The watch repaired first (its own trigger kept): a later repair of new damage is not labelled by the note."""
    downloaded.health.found_by(REPO, HealthTrigger.WORKER_CRASH)
    truncate(weight_blob(downloaded), 50_000)
    downloaded.health.repair(REPO, trigger=HealthTrigger.FILE_CHANGE)
    truncate(weight_blob(downloaded), 40_000)
    downloaded.health.repair(REPO)
    assert [f.trigger for f in downloaded.health.findings(REPO)] == [
        HealthTrigger.FILE_CHANGE,
        HealthTrigger.BEFORE_USE,
    ]
