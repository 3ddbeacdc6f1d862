"""IntelligentFallbackManager ranks alternatives by task and by fit to the measured hardware."""

from __future__ import annotations

import pytest

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.store.catalog import CATALOG, DeviceBudget, IntelligentFallbackManager, Task

WAN_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"


def test_cpu_only_machine_falls_back_to_the_embedded_model() -> None:
    """Without a GPU the only text-to-video alternative that runs is the embedded tiny model."""
    suggestions = IntelligentFallbackManager().suggest(WAN_14B, DeviceBudget(vram_gb=None, ram_gb=24))
    assert [s.entry.model_id for s in suggestions] == [EMBEDDED_MODEL_ID]


def test_small_gpu_gets_models_that_fit_it() -> None:
    """On a 12 GB card every suggestion fits 12 GB and none is the failed model."""
    suggestions = IntelligentFallbackManager().suggest(WAN_14B, DeviceBudget(vram_gb=12, ram_gb=32))
    assert suggestions and all(s.entry.min_vram_gb <= 12 and s.entry.model_id != WAN_14B for s in suggestions)
    assert suggestions[0].entry.model_id == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def test_image_to_video_task_excludes_text_only_models() -> None:
    """Alternatives for an image-to-video model all do image-to-video."""
    manager = IntelligentFallbackManager()
    suggestions = manager.suggest("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", DeviceBudget(vram_gb=24, ram_gb=64))
    assert suggestions and all(Task.IMAGE_TO_VIDEO in s.entry.tasks for s in suggestions)


def test_downloaded_model_ranks_first_and_offline_keeps_only_local_ones() -> None:
    """A model already in the cache outranks bigger ones; offline, models not downloaded are left out."""
    local = "THUDM/CogVideoX-2b"
    manager = IntelligentFallbackManager(is_available=lambda model_id: model_id == local)
    online = manager.suggest(WAN_14B, DeviceBudget(vram_gb=24, ram_gb=64))
    offline = manager.suggest(WAN_14B, DeviceBudget(vram_gb=24, ram_gb=64, online=False))
    assert online[0].entry.model_id == local and online[0].available_locally
    assert [s.entry.model_id for s in offline] == [local]


@pytest.mark.parametrize("entry", CATALOG, ids=lambda e: e.model_id)
def test_catalog_entries_are_consistent(entry) -> None:
    """Every entry has a task, a positive size and a recommended VRAM not below its minimum."""
    assert entry.tasks and entry.download_gb > 0 and entry.recommended_vram_gb >= entry.min_vram_gb
