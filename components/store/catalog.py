"""A catalogue of known video models and IntelligentFallbackManager, which ranks alternatives to a failed one.

Sizes and memory needs of hub models are approximate (download sizes of the Diffusers repos, VRAM as reported by
the model cards with diffusers' offloading where the card says so); they rank candidates, they do not promise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from components.generation.embedded_model import EMBEDDED_MODEL_ID

__all__ = ["CATALOG", "CatalogEntry", "DeviceBudget", "IntelligentFallbackManager", "Suggestion", "Task"]

GB = 1_000_000_000


class Task(str, Enum):
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"


@dataclass(frozen=True)
class CatalogEntry:
    """A known model: what it does, how big it is, and the memory it typically needs."""

    model_id: str
    family: str
    tasks: tuple[Task, ...]
    params_b: float
    download_gb: float
    min_vram_gb: float
    recommended_vram_gb: float
    quality: int  # 0 (noise) .. 5 (best of the catalogue); ranks alternatives of similar fit
    runs_on_cpu: bool = False
    notes: str = ""


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        EMBEDDED_MODEL_ID,
        "wan",
        (Task.TEXT_TO_VIDEO,),
        0.0001,
        0.001,
        0.0,
        0.0,
        0,
        True,
        "built offline from random weights: its output is noise, for demos and tests",
    ),
    CatalogEntry(
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "wan",
        (Task.TEXT_TO_VIDEO,),
        1.3,
        29.0,
        8.2,
        12.0,
        3,
        notes="480p; 8.19 GB VRAM with offloading per the model card",
    ),
    CatalogEntry("Wan-AI/Wan2.1-T2V-14B-Diffusers", "wan", (Task.TEXT_TO_VIDEO,), 14.0, 78.0, 24.0, 80.0, 5),
    CatalogEntry("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "wan", (Task.IMAGE_TO_VIDEO,), 14.0, 80.0, 24.0, 80.0, 5),
    CatalogEntry(
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        "wan",
        (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO),
        5.0,
        34.0,
        16.0,
        24.0,
        4,
        notes="720p on a 24 GB card with offloading per the model card",
    ),
    CatalogEntry("Lightricks/LTX-Video", "ltx", (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO), 2.0, 15.0, 8.0, 16.0, 3),
    CatalogEntry(
        "THUDM/CogVideoX-2b",
        "cogvideox",
        (Task.TEXT_TO_VIDEO,),
        2.0,
        13.0,
        4.0,
        18.0,
        2,
        notes="about 4 GB VRAM with CPU offload and VAE tiling per the model card",
    ),
    CatalogEntry("THUDM/CogVideoX-5b", "cogvideox", (Task.TEXT_TO_VIDEO,), 5.0, 21.0, 5.0, 26.0, 3),
    CatalogEntry("THUDM/CogVideoX-5b-I2V", "cogvideox", (Task.IMAGE_TO_VIDEO,), 5.0, 21.0, 5.0, 26.0, 3),
)


@dataclass(frozen=True)
class DeviceBudget:
    """What the machine offers, as measured by the hardware probe (VRAM None: no GPU)."""

    vram_gb: float | None
    ram_gb: float
    disk_free_gb: float = float("inf")
    online: bool = True


@dataclass(frozen=True)
class Suggestion:
    entry: CatalogEntry
    score: float
    available_locally: bool
    fits: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


class IntelligentFallbackManager:
    """Rank compatible alternatives for a failed model by task and by fit to the measured hardware."""

    def __init__(
        self, catalog: Iterable[CatalogEntry] = CATALOG, is_available: Callable[[str], bool] | None = None
    ) -> None:
        self.catalog = {e.model_id: e for e in catalog}
        self.is_available = is_available or (lambda model_id: False)

    def entry(self, model_id: str) -> CatalogEntry | None:
        return self.catalog.get(model_id)

    def suggest(
        self, failed_model_id: str, device: DeviceBudget, *, task: Task | None = None, limit: int = 3
    ) -> list[Suggestion]:
        """Alternatives that do ``task`` (default: the failed model's), best first; models that cannot run
        here, or cannot be fetched (offline, no disk) and are not present, are left out."""
        failed = self.catalog.get(failed_model_id)
        task = task or (failed.tasks[0] if failed else Task.TEXT_TO_VIDEO)
        ranked = []
        for entry in self.catalog.values():
            if entry.model_id == failed_model_id or task not in entry.tasks:
                continue
            suggestion = self._score(entry, failed, device)
            if suggestion is not None:
                ranked.append(suggestion)
        ranked.sort(key=lambda s: (-s.score, s.entry.download_gb))
        return ranked[:limit]

    def _score(self, entry: CatalogEntry, failed: CatalogEntry | None, device: DeviceBudget) -> Suggestion | None:
        local = self.is_available(entry.model_id)
        reasons: list[str] = []
        if device.vram_gb is None:
            fits = entry.runs_on_cpu
            reasons.append("runs on CPU" if fits else "needs a GPU")
        else:
            fits = entry.min_vram_gb <= device.vram_gb
            reasons.append(f"needs ~{entry.min_vram_gb:g} GB VRAM, {device.vram_gb:g} GB measured")
        if not fits:
            return None
        if not local and (not device.online or entry.download_gb > device.disk_free_gb):
            return None
        score = entry.quality * 10.0
        if device.vram_gb is not None and entry.recommended_vram_gb <= device.vram_gb:
            score += 5
            reasons.append("fits without offloading")
        if local:
            score += 20
            reasons.append("already downloaded")
        else:
            score -= min(10.0, entry.download_gb / 10)
            reasons.append(f"~{entry.download_gb:g} GB to download")
        if failed is not None and entry.family == failed.family:
            score += 3
            reasons.append(f"same family as {failed.model_id}")
        return Suggestion(entry, score, local, fits, tuple(reasons))
