"""Updates download beside, verify, switch, and roll back by themselves; compatibility names the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.chaos.loopback_hub import Fault, HubServer
from components.store.model_store import ModelStore
from components.store.versions import UpdateStatus, check_compatibility
from recovery.errors import ModelCompatibilityError, ModelVersionError
from tests.store.conftest import REPO, WEIGHTS


@pytest.fixture
def installed(store: ModelStore, hub: HubServer) -> str:
    """The first revision downloaded and current; returns its commit."""
    store.download(REPO)
    return store.cache.resolve(REPO, "main") or ""


def test_update_switches_to_the_new_revision_and_keeps_the_old(
    store: ModelStore, hub: HubServer, installed: str, model_v2: Path
) -> None:
    """A good new revision is verified, becomes current, and the previous one stays for rollback."""
    new = hub.add_revision(REPO, model_v2)
    report = store.versions.update(REPO)
    assert report.status is UpdateStatus.UPDATED and report.new_commit == new
    assert store.cache.resolve(REPO, "main") == new
    assert store.cache.snapshot_dir(REPO, installed).is_dir()


def test_corrupt_new_revision_is_rolled_back_automatically(
    store: ModelStore, hub: HubServer, installed: str, model_v2: Path
) -> None:
    """When the new weights arrive corrupted every time, the update reports ROLLED_BACK and main is unchanged."""
    hub.add_revision(REPO, model_v2)
    hub.inject(Fault("flip", WEIGHTS, after_bytes=250_000, times=None))
    report = store.versions.update(REPO)
    assert report.status is UpdateStatus.ROLLED_BACK and "hashes to" in report.reason
    assert store.cache.resolve(REPO, "main") == installed
    assert store.health.verify(REPO).ok


def test_failed_test_load_rolls_back(store: ModelStore, hub: HubServer, installed: str, model_v2: Path) -> None:
    """A test load that raises after the switch puts main back on the previous commit."""
    hub.add_revision(REPO, model_v2)

    def broken_load(snapshot: Path) -> None:
        raise OSError(f"cannot load {snapshot}")

    report = store.versions.update(REPO, validate=broken_load)
    assert report.status is UpdateStatus.ROLLED_BACK and "test load failed" in report.reason
    assert store.cache.resolve(REPO, "main") == installed


def test_rollback_on_request(store: ModelStore, hub: HubServer, installed: str, model_v2: Path) -> None:
    """After a good update, rollback() returns main to the previous commit; a second one has nothing left."""
    hub.add_revision(REPO, model_v2)
    store.versions.update(REPO)
    assert store.versions.rollback(REPO) == installed == store.cache.resolve(REPO, "main")
    with pytest.raises(ModelVersionError):
        store.versions.rollback(REPO)


def test_update_without_a_new_revision_is_a_no_op(store: ModelStore, hub: HubServer, installed: str) -> None:
    """Updating to the commit already current downloads nothing."""
    hub.clear()
    assert store.versions.update(REPO).status is UpdateStatus.UP_TO_DATE
    assert not hub.fetched()


def _model_index(tmp_path: Path, **fields: object) -> Path:
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "WanPipeline", "_diffusers_version": "0.35.0", **fields})
    )
    return tmp_path


def test_missing_pipeline_class_is_a_compatibility_error(tmp_path: Path) -> None:
    """A pipeline class the installed diffusers lacks is named, with the upgrade to install."""
    report = check_compatibility(_model_index(tmp_path, _class_name="WanHyperPipeline"))
    assert report.missing_classes == ("diffusers.WanHyperPipeline",) and "pip install -U diffusers" in (
        report.requirement or ""
    )
    with pytest.raises(ModelCompatibilityError):
        report.raise_for_problems("org/model")


def test_newer_saved_diffusers_version_names_the_requirement(tmp_path: Path) -> None:
    """A model saved with a newer diffusers than installed asks for diffusers>=that version."""
    report = check_compatibility(_model_index(tmp_path, _diffusers_version="9.1.0"))
    assert report.requirement == "diffusers>=9.1.0" and not report.ok
    with pytest.raises(ModelVersionError) as info:
        report.raise_for_problems("org/model")
    assert info.value.expected == "diffusers>=9.1.0"


def test_installed_model_is_compatible(store: ModelStore, installed: str) -> None:
    """The served Wan-shaped model needs nothing the installed diffusers lacks."""
    assert store.availability.compatibility(REPO).ok
