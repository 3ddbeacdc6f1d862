"""The store as the recovery engine sees it: ``recovery.ports.ModelStorePort``, yes/no answers for the repair and
fallback strategies, and fallback candidates ranked for the machine the hardware probe describes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError

from components.store.catalog import DeviceBudget
from components.store.disk import free_bytes
from components.store.model_store import ModelStore
from recovery.errors import KintsugiError

__all__ = ["StorePort", "device_budget"]

_STORE_FAILURES = (KintsugiError, HfHubHTTPError)
_GB = 1_000_000_000


def device_budget(state: Mapping[str, Any], disk_free_bytes: int, *, online: bool = True) -> DeviceBudget:
    """What the machine offers, from a hardware probe's reading (``components.memory.hardware``): GPU memory (None
    without a CUDA device), RAM, the free disk of the model cache, and whether the hub may be asked."""
    vram = None
    if state.get("device") == "cuda":
        total = state.get("cuda_total_bytes") or next((g["total_bytes"] for g in state.get("gpus", ())), 0)
        vram = total / _GB
    return DeviceBudget(vram, (state.get("ram_total_bytes") or 0) / _GB, disk_free_bytes / _GB, online)


class StorePort:
    """``recovery.ports.ModelStorePort`` over a ``ModelStore``.

    Failures the store raises (typed, already classified elsewhere) become ``False`` here; the strategy then
    reports that the repair did not work and the engine moves on to the next strategy. ``probe`` reads the
    hardware (the service passes its ``HardwareProbe``); without one the machine counts as CPU-only.
    """

    def __init__(
        self, store: ModelStore, probe: Callable[[], Mapping[str, Any]] | None = None, revision: str = "main"
    ) -> None:
        self.store, self.probe, self.revision = store, probe, revision

    def device(self) -> DeviceBudget:
        """The machine now: the probe's reading, the cache's free disk, and ``HF_HUB_OFFLINE``."""
        state = self.probe() if self.probe is not None else {}
        return device_budget(state, free_bytes(self.store.cache.cache_dir), online=not constants.HF_HUB_OFFLINE)

    def verify(self, model_id: str) -> bool:
        try:
            self.store.health.before_load(model_id, self.revision)
        except _STORE_FAILURES:
            return False
        return True

    def repair(self, model_id: str) -> bool:
        try:
            return self.store.health.repair(model_id, self.revision).ok
        except _STORE_FAILURES:
            return False

    def download(self, model_id: str) -> bool:
        try:
            self.store.ensure(model_id, self.revision)
        except _STORE_FAILURES:
            return False
        return True

    def fallback_candidates(self, model_id: str) -> list[str]:
        return [s.entry.model_id for s in self.store.fallbacks.suggest(model_id, self.device())]
