"""Disk pre-flight against the cache's real free space, and cleanup plans applied only on request."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.chaos.loopback_hub import HubServer
from components.store.model_store import ModelStore
from recovery.errors import StorageFullError
from tests.store.conftest import REPO, stop_download_midway

OTHER = "kintsugi-test/old-model"


@pytest.fixture
def crowded(store: ModelStore, hub: HubServer, model_v1: Path, model_v2: Path) -> ModelStore:
    """A cache holding another model in two revisions: one current, one no branch points to."""
    hub.add_revision(OTHER, model_v2)
    store.download(OTHER)
    old = store.cache.resolve(OTHER, "main")
    hub.add_revision(OTHER, {"model_index.json": b"{}", "weights.safetensors": b"\0" * 8})
    store.download(OTHER)
    assert old != store.cache.resolve(OTHER, "main")
    return store


def test_preflight_refuses_with_a_cleanup_plan(crowded: ModelStore) -> None:
    """When free space minus the reserve is short, download raises StorageFullError carrying a plan."""
    free = shutil.disk_usage(crowded.cache.cache_dir).free
    crowded.availability.reserve_bytes = free + 64 * 2**20  # keep more free than the disk has (other writers)
    with pytest.raises(StorageFullError) as info:
        crowded.download(REPO)
    error = info.value
    assert error.bytes_needed == crowded.availability.availability(REPO).bytes_expected > 700_000
    assert not crowded.cache.resolve(REPO, "main")
    plan = error.plan
    assert plan.items[0].repo_id == OTHER and plan.items[0].refs == () and plan.items[0].bytes_freed > 700_000
    assert all(item.repo_id != REPO for item in plan.items)


def test_cleanup_plan_is_applied_only_on_request(crowded: ModelStore) -> None:
    """Planning deletes nothing; applying deletes exactly the planned revisions and frees what it said."""
    plan = crowded.availability.cleanup_plan(1)
    (item,) = plan.items
    snapshot = crowded.cache.snapshot_dir(item.repo_id, item.commit)
    assert snapshot.is_dir()
    freed = crowded.availability.apply_cleanup(plan)
    assert freed == plan.bytes_freed == item.bytes_freed
    assert not snapshot.exists() and crowded.cache.resolve(OTHER, "main") is not None


def test_cleanup_plan_grows_to_whole_models_least_recent_first(crowded: ModelStore) -> None:
    """Asked for more than old revisions hold, the plan adds current revisions of unprotected models."""
    plan = crowded.availability.cleanup_plan(10**12, protect=REPO)
    assert [i.refs for i in plan.items] == [(), ("main",)] and not plan.sufficient


def test_cleanup_plan_offers_an_unfinished_download_and_frees_exactly_its_bytes(
    store: ModelStore, hub: HubServer
) -> None:
    """A stopped download's partial blob is listed as an item of its own and only deleted when applied."""
    kept = stop_download_midway(store)
    plan = store.availability.cleanup_plan(1)
    (item,) = plan.items
    assert (item.repo_id, item.commit, item.bytes_freed) == (REPO, "", kept)
    assert item.reason == "unfinished download (kept to resume)" and all(p.is_file() for p in item.files)
    assert store.availability.apply_cleanup(plan) == kept
    assert store.cache.partial_bytes(REPO) == {}


def test_unfinished_download_of_the_protected_model_is_not_offered(store: ModelStore, hub: HubServer) -> None:
    """Making room for a model never deletes the bytes already downloaded for it."""
    stop_download_midway(store)
    assert store.availability.cleanup_plan(1, protect=REPO).items == ()


def test_kept_models_are_never_offered_whatever_the_space_asked(crowded: ModelStore) -> None:
    """A repo in ``keep`` (the default model, one in use) has none of its revisions offered, even to free all."""
    from components.store.disk import plan_cleanup

    crowded.ensure(REPO)
    offered = {item.repo_id for item in plan_cleanup(crowded.cache, 10**15).items}
    assert {REPO, OTHER} <= offered
    kept = plan_cleanup(crowded.cache, 10**15, keep={OTHER})
    assert {item.repo_id for item in kept.items} == {REPO}


def test_unfinished_download_of_a_kept_model_is_not_offered(store: ModelStore, hub: HubServer) -> None:
    """The bytes of a stopped download of a kept model stay: they are how its download resumes."""
    from components.store.disk import plan_cleanup

    stop_download_midway(store)
    assert plan_cleanup(store.cache, 1, keep={REPO}).items == ()
