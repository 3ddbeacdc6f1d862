"""The store plugs into the recovery layer through recovery.ports.ModelStorePort."""

from __future__ import annotations

from components.chaos.loopback_hub import HubServer
from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.store.catalog import DeviceBudget
from components.store.model_store import ModelStore
from components.store.port import StorePort, device_budget
from recovery.ports import ModelStorePort
from tests.store.conftest import REPO, WEIGHTS


def test_store_port_satisfies_the_recovery_protocol(store: ModelStore) -> None:
    """StorePort is a recovery.ports.ModelStorePort."""
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
    """On a CPU-only device the port offers only built-in tiny models, the failed model's own family's first."""
    from components.store.catalog import CATALOG

    port = StorePort(store, probe=lambda: {"device": "cpu", "ram_total_bytes": 16 * 10**9})
    candidates = port.fallback_candidates("Wan-AI/Wan2.1-T2V-14B-Diffusers")
    built_in = {entry.model_id for entry in CATALOG if entry.built_in}
    assert candidates[0] == EMBEDDED_MODEL_ID and set(candidates) <= built_in


def test_port_reads_the_gpu_the_probe_reports(store: ModelStore) -> None:
    """The port's machine is the probe's: a CUDA reading gives the card's memory, not a CPU-only budget."""
    port = StorePort(
        store, probe=lambda: {"device": "cuda", "cuda_total_bytes": 24 * 10**9, "ram_total_bytes": 64 * 10**9}
    )
    budget = port.device()
    assert (budget.vram_gb, budget.ram_gb) == (24.0, 64.0) and budget.disk_free_gb > 0


def test_device_budget_from_a_probe_reading() -> None:
    """NVML's card stands in when torch.cuda gave no total; no GPU means no VRAM; offline is kept."""
    state = {"device": "cuda", "gpus": [{"total_bytes": 80 * 10**9}], "ram_total_bytes": 10**12}
    assert device_budget(state, 5 * 10**9, online=False) == DeviceBudget(80.0, 1000.0, 5.0, False)
    assert device_budget({"device": "cpu"}, 0).vram_gb is None
