"""Gated, unknown repos and revisions, missing files: each reaches the caller as the right type."""

from __future__ import annotations

import pickle

import pytest
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

from components.chaos.loopback_hub import Fault, HubServer
from components.store.availability import ModelStatus
from components.store.model_store import ModelStore
from recovery.errors import ModelAccessError, ModelVersionError
from tests.store.conftest import REPO, WEIGHTS


@pytest.mark.parametrize("status", [401, 403])
def test_gated_repo_is_a_permission_failure_with_steps(store: ModelStore, hub: HubServer, status: int) -> None:
    """A gated repo raises ModelAccessError (a PermissionError) whose steps say how to get access."""
    hub.set_gated(REPO, status)
    with pytest.raises(ModelAccessError) as info:
        store.download(REPO)
    error = info.value
    assert isinstance(error, PermissionError) and error.reason == "gated"
    assert any("accept" in step for step in error.steps) and any("HF_TOKEN" in step for step in error.steps)
    assert pickle.loads(pickle.dumps(error)).steps == error.steps


def test_gated_repo_availability_lists_the_steps(store: ModelStore, hub: HubServer) -> None:
    """Availability of a gated repo is GATED with the access steps."""
    hub.set_gated(REPO)
    state = store.availability.availability(REPO)
    assert state.status is ModelStatus.GATED and state.steps


def test_unknown_repo_raises_the_hub_repository_error(store: ModelStore) -> None:
    """A repo the hub does not know raises RepositoryNotFoundError and is UNKNOWN_REPO."""
    with pytest.raises(RepositoryNotFoundError):
        store.download("nobody/nothing")
    assert store.availability.availability("nobody/nothing").status is ModelStatus.UNKNOWN_REPO


def test_unknown_revision_is_a_version_error(store: ModelStore) -> None:
    """A revision the repo lacks raises ModelVersionError naming it and is UNKNOWN_REVISION."""
    with pytest.raises(ModelVersionError) as info:
        store.download(REPO, "v9")
    assert info.value.expected == "v9"
    assert store.availability.availability(REPO, "v9").status is ModelStatus.UNKNOWN_REVISION


def test_missing_file_is_the_hub_entry_error(store: ModelStore, hub: HubServer) -> None:
    """A file listed but answered 404 raises the hub's RemoteEntryNotFoundError without retrying."""
    hub.inject(Fault("status", WEIGHTS, status=404, error_code="EntryNotFound", times=None))
    with pytest.raises(RemoteEntryNotFoundError):
        store.download(REPO)
    assert len([r for r in hub.fetched() if r.filename == WEIGHTS]) == 1
