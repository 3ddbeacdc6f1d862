"""The store plugs into the recovery layer through recovery.ports.ModelStore."""

from __future__ import annotations

from components.embedded_model import EMBEDDED_MODEL_ID
from components.store import ModelStore, StorePort
from components.store_catalog import DeviceBudget
from recovery.ports import ModelStore as ModelStorePort
from tests.store.conftest import REPO, WEIGHTS
from tests.support.hub_server import HubServer


def test_store_port_satisfies_the_recovery_protocol(store: ModelStore) -> None:
    """StorePort is a recovery.ports.ModelStore."""
    assert isinstance(StorePort(store), ModelStorePort)


def test_port_downloads_verifies_and_repairs(store: ModelStore, hub: HubServer) -> None:
    """download → verify True; truncated → verify False; repair → verify True again."""
    port = StorePort(store)
    assert not port.verify(REPO) and port.download(REPO) and port.verify(REPO)
    blob = (store.cache.snapshot_dir(REPO, store.cache.resolve(REPO, "main") or "") / WEIGHTS).resolve()
    blob.write_bytes(blob.read_bytes()[:1000])
    assert not port.verify(REPO) and port.repair(REPO) and port.verify(REPO)


def test_port_answers_false_for_a_gated_model(store: ModelStore, hub: HubServer) -> None:
    """A download the hub refuses is False, not an exception inside the strategy."""
    hub.set_gated(REPO)
    assert not StorePort(store).download(REPO)


def test_port_fallbacks_follow_the_measured_device(store: ModelStore) -> None:
    """On a CPU-only device the port offers only the embedded model."""
    port = StorePort(store, device=lambda: DeviceBudget(vram_gb=None, ram_gb=16))
    assert port.fallback_candidates("Wan-AI/Wan2.1-T2V-14B-Diffusers") == [EMBEDDED_MODEL_ID]
