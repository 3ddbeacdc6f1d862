"""The catalogue of known video models and ``IntelligentFallbackManager``, which ranks alternatives to a failed one.

``ENTRIES`` is what we know about each model: its family (a name of ``components.generation.families``), its
tasks, its download size and memory needs as the sources state them (each entry cites its source; a figure the
sources do not state is ``None``, shown as "not stated", never guessed), and its smaller sibling (the memory
ladder's "smaller model" rung). ``CATALOG`` lists only the entries whose family the generator runs, so every model
the studio offers — in the picker, as a fallback, as a smaller sibling — can really run.

Memory figures are GPU memory in GB from the model cards (with the card's own offloading where it says so); they
rank candidates, they do not promise. Download sizes are the sum of the stated parts of the Diffusers repository
(file listings on the hub): where one part's size is not stated the figure is a lower bound, and the note says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.families import FAMILIES, Task

__all__ = [
    "CATALOG",
    "ENTRIES",
    "CatalogEntry",
    "DeviceBudget",
    "IntelligentFallbackManager",
    "Suggestion",
    "Task",
    "catalog_markdown",
    "families_markdown",
    "listed",
    "models_markdown",
    "with_generated_tables",
]

_MODEL_CARD = "https://huggingface.co/{}"
_TREE = "https://huggingface.co/{}/tree/main/{}"
_TINY_SOURCE = "built offline from code (components.generation.embedded_model); 0.3–0.6 MB on disk, measured"
_TINY_NOTE = "built offline from random weights: its output is noise, for demos and tests"


@dataclass(frozen=True)
class CatalogEntry:
    """A known model: its family, what it does, how big it is, what memory it needs, and its smaller sibling.

    ``download_gb``, ``min_vram_gb`` and ``recommended_vram_gb`` are ``None`` where the sources do not state them.
    ``smaller``: the model the memory ladder may switch to (with the user's consent) when no lower setting of this
    one fits — a smaller model of the same line that does the same tasks.
    """

    model_id: str
    family: str
    tasks: tuple[Task, ...]
    params_b: float
    download_gb: float | None
    min_vram_gb: float | None
    recommended_vram_gb: float | None
    quality: int  # 0 (noise) .. 5 (best of the catalogue); ranks alternatives of similar fit
    runs_on_cpu: bool = False
    notes: str = ""
    smaller: str | None = None
    source: str = ""
    built_in: bool = False  # a tiny model built here from code: nothing to download, its output is noise


def _tiny(model_id: str, family: str, tasks: tuple[Task, ...]) -> CatalogEntry:
    """A built-in tiny model: runs anywhere, downloads nothing, makes noise."""
    return CatalogEntry(
        model_id, family, tasks, 0.0001, 0.001, 0.0, 0.0, 0, True, _TINY_NOTE, source=_TINY_SOURCE, built_in=True
    )


T2V, I2V = Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO
WAN21_13B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WAN21_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
WAN22_5B = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
COGVIDEOX_2B = "THUDM/CogVideoX-2b"

#: Every known model, whatever its family; the built-in tiny model first (the default), then the real models by
#: family, then the other families' tiny models.
ENTRIES: tuple[CatalogEntry, ...] = (
    _tiny(EMBEDDED_MODEL_ID, "wan2.1-t2v", (T2V,)),
    # Wan 2.1 T2V 1.3B. Model card: "The T2V-1.3B model requires only 8.19 GB VRAM". Download: text_encoder
    # 22.7 GB + transformer 5.68 GB (the repository's file listing); the VAE's size is not stated there.
    CatalogEntry(
        WAN21_13B,
        "wan2.1-t2v",
        (T2V,),
        1.3,
        28.4,
        8.19,
        None,
        3,
        notes="480p; 8.19 GB VRAM per the model card; download without the VAE (its size not stated)",
        source=f"{_MODEL_CARD.format(WAN21_13B)}; {_TREE.format(WAN21_13B, 'text_encoder')}; "
        f"{_TREE.format(WAN21_13B, 'transformer')}",
    ),
    # Wan 2.1 T2V 14B. Download: text_encoder 22.7 GB (file listing); the transformer's 12 shards are not all
    # stated, so the total is not stated. Memory for one GPU: not stated on the model card.
    CatalogEntry(
        WAN21_14B,
        "wan2.1-t2v",
        (T2V,),
        14.0,
        None,
        None,
        None,
        5,
        notes="480p and 720p; memory need not stated on the model card",
        smaller=WAN21_13B,
        source=f"{_MODEL_CARD.format(WAN21_14B)}; {_TREE.format(WAN21_14B, 'text_encoder')}",
    ),
    # Wan 2.1 I2V 14B 480P / 720P. Neither the download size nor the memory need is stated in the sources found.
    # Smaller sibling: Wan 2.2 TI2V-5B, the smaller Wan that also does image-to-video.
    CatalogEntry(
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        "wan2.1-i2v",
        (I2V,),
        14.0,
        None,
        None,
        None,
        5,
        notes="480p; download size and memory need not stated",
        smaller=WAN22_5B,
        source=_MODEL_CARD.format("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"),
    ),
    CatalogEntry(
        "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
        "wan2.1-i2v",
        (I2V,),
        14.0,
        None,
        None,
        None,
        5,
        notes="720p; download size and memory need not stated",
        smaller=WAN22_5B,
        source=_MODEL_CARD.format("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"),
    ),
    # Wan 2.2 TI2V-5B. Wan2.2 README: "This command can run on a GPU with at least 24GB VRAM (e.g, RTX 4090 GPU)"
    # (with its offload flags). Download: text_encoder 11.4 GB (file listing); the transformer's size not stated.
    CatalogEntry(
        WAN22_5B,
        "wan2.2-ti2v",
        (T2V, I2V),
        5.0,
        11.4,
        24.0,
        None,
        4,
        notes="720p at 24 fps; 24 GB VRAM with offloading per the Wan 2.2 README; download: text encoder only "
        "(the transformer's and VAE's sizes not stated)",
        source=f"https://github.com/Wan-Video/Wan2.2; {_TREE.format(WAN22_5B, 'text_encoder')}",
    ),
    # Wan 2.2 A14B (two 14B experts, 27B in all). Wan2.2 README: single-GPU inference needs "at least 80GB VRAM".
    # Download: transformer + transformer_2 are float32, about 57 GB each (Calamdor/Wan2.2-T2V-A14B-BF16's card,
    # which lists the original repository's parts); the text encoder's and VAE's sizes are not stated there.
    CatalogEntry(
        "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        "wan2.2-a14b",
        (T2V,),
        27.0,
        114.0,
        80.0,
        None,
        5,
        notes="two 14B experts; 80 GB VRAM for one GPU per the Wan 2.2 README; download: the two transformers only",
        smaller=WAN22_5B,
        source="https://github.com/Wan-Video/Wan2.2; https://huggingface.co/Calamdor/Wan2.2-T2V-A14B-BF16",
    ),
    # Wan-AI/Wan2.2-I2V-A14B-Diffusers is not listed: no family runs its variant (the I2V class with two experts),
    # so it is refused by name rather than offered (generation.families.registry.family_of_folder).
    # CogVideoX. Model cards: 2B "diffusers FP16: from 4GB*", 5B and 5B-I2V "diffusers BF16: from 5GB*" (* with
    # every diffusers optimisation: CPU offload, VAE tiling). Download of the 2B: text_encoder 4.99 + 4.53 GB,
    # transformer 3.39 GB (file listing); the VAE's size not stated. The 5B downloads are not stated.
    CatalogEntry(
        COGVIDEOX_2B,
        "cogvideox",
        (T2V,),
        2.0,
        12.9,
        4.0,
        None,
        2,
        notes="720×480, 49 frames; from 4 GB VRAM with CPU offload and VAE tiling per the model card; download "
        "without the VAE (its size not stated)",
        source=f"{_MODEL_CARD.format(COGVIDEOX_2B)}; {_TREE.format(COGVIDEOX_2B, 'text_encoder')}; "
        f"{_TREE.format(COGVIDEOX_2B, 'transformer')}",
    ),
    CatalogEntry(
        "THUDM/CogVideoX-5b",
        "cogvideox",
        (T2V,),
        5.0,
        None,
        5.0,
        None,
        3,
        notes="720×480, 49 frames; from 5 GB VRAM with CPU offload and VAE tiling per the model card",
        smaller=COGVIDEOX_2B,
        source=_MODEL_CARD.format("THUDM/CogVideoX-5b"),
    ),
    CatalogEntry(
        "THUDM/CogVideoX-5b-I2V",
        "cogvideox",
        (I2V,),
        5.0,
        None,
        5.0,
        None,
        3,
        notes="720×480, 49 frames; from 5 GB VRAM with CPU offload and VAE tiling per the model card",
        source=_MODEL_CARD.format("THUDM/CogVideoX-5b-I2V"),
    ),
    # LTX-Video (2B). Its Diffusers transformer is 7.69 GB (file listing); the repository also holds single-file
    # checkpoints, and its total is not stated. The model card states no memory need.
    CatalogEntry(
        "Lightricks/LTX-Video",
        "ltx",
        (T2V,),
        2.0,
        None,
        None,
        None,
        3,
        notes="768×512 at 24 fps; download size and memory need not stated",
        source=f"{_MODEL_CARD.format('Lightricks/LTX-Video')}; {_TREE.format('Lightricks/LTX-Video', 'transformer')}",
    ),
    # HunyuanVideo, Diffusers format ("over 13 billion parameters", diffusers' HunyuanVideo docs). Tencent's model
    # card: "The minimum GPU memory required is 60GB for 720px1280px129f and 45G for 544px960px129f", 80 GB
    # recommended. Download: transformer 25.6 GB, text_encoder 16.1 GB, text_encoder_2 0.25 GB, VAE 0.99 GB — from
    # the file listings of other uploads of this pipeline (magespace/hyvideo-diffusers; jobs-git/
    # HunyuanVideoCommunity, a duplicate of this repository), this repository's own listing not found.
    CatalogEntry(
        "hunyuanvideo-community/HunyuanVideo",
        "hunyuanvideo-t2v",
        (T2V,),
        13.0,
        42.9,
        45.0,
        80.0,
        4,
        notes="45 GB for 544×960×129 frames, 60 GB at 720p, 80 GB recommended, per the model card",
        source="https://huggingface.co/tencent/HunyuanVideo; "
        "https://huggingface.co/docs/diffusers/api/pipelines/hunyuan_video; "
        "https://huggingface.co/magespace/hyvideo-diffusers; https://huggingface.co/jobs-git/HunyuanVideoCommunity",
    ),
    _tiny("kintsugi/tiny-wan-i2v-random", "wan2.1-i2v", (I2V,)),
    _tiny("kintsugi/tiny-wan22-ti2v-random", "wan2.2-ti2v", (T2V, I2V)),
    _tiny("kintsugi/tiny-wan22-a14b-random", "wan2.2-a14b", (T2V,)),
    _tiny("kintsugi/tiny-cogvideox-random", "cogvideox", (T2V,)),
    _tiny("kintsugi/tiny-ltx-random", "ltx", (T2V,)),
    _tiny("kintsugi/tiny-hunyuan-random", "hunyuanvideo-t2v", (T2V,)),
)


def listed(entries: Iterable[CatalogEntry] = ENTRIES) -> tuple[CatalogEntry, ...]:
    """The entries whose family the generator runs (``components.generation.families.FAMILIES``)."""
    supported = {family.name for family in FAMILIES}
    return tuple(entry for entry in entries if entry.family in supported)


#: What the studio offers: the known models whose family it runs.
CATALOG: tuple[CatalogEntry, ...] = listed()


@dataclass(frozen=True)
class DeviceBudget:
    """What the machine offers, as measured by the hardware probe (VRAM None: no GPU)."""

    vram_gb: float | None
    ram_gb: float
    disk_free_gb: float = float("inf")
    online: bool = True


@dataclass(frozen=True)
class Suggestion:
    """An alternative, with why it ranks where it does (``rank``): a real model before a built-in noise model,
    then ``same_task`` (does every task of the failed model, not just the one asked), then ``same_family``, then
    ``score`` (fit: already downloaded, room to spare, quality, download size)."""

    entry: CatalogEntry
    score: float
    available_locally: bool
    fits: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)
    same_task: bool = False
    same_family: bool = False

    @property
    def rank(self) -> tuple[bool, bool, bool, float]:
        return not self.entry.built_in, self.same_task, self.same_family, self.score


class IntelligentFallbackManager:
    """Rank alternatives for a failed model: the same task first, then the same family, then fit to the measured
    hardware. Only models that do the wanted task and can run and be fetched here are offered; among them, those
    doing every task of the failed model (an image-and-text model's stand-in that also takes an image) go first.

    One exception to "task and family first": a built-in tiny model makes noise, so where a real model fits it
    goes before any tiny one, whatever their families; where none does (a CPU-only machine) the tiny model of the
    failed model's family goes first."""

    def __init__(
        self, catalog: Iterable[CatalogEntry] = CATALOG, is_available: Callable[[str], bool] | None = None
    ) -> None:
        self.catalog = {e.model_id: e for e in catalog}
        self.is_available = is_available or (lambda model_id: False)

    def entry(self, model_id: str) -> CatalogEntry | None:
        return self.catalog.get(model_id)

    def smaller_model(self, model_id: str) -> str | None:
        """The catalogued smaller sibling of ``model_id`` (the memory ladder's "smaller model" rung), when it is in
        this catalogue (its family runs here)."""
        entry = self.catalog.get(model_id)
        if entry is None or entry.smaller is None or entry.smaller not in self.catalog:
            return None
        return entry.smaller

    def suggest(
        self, failed_model_id: str, device: DeviceBudget, *, task: Task | None = None, limit: int = 3
    ) -> list[Suggestion]:
        """Alternatives that do ``task`` (default: the failed model's first), best first; models that cannot run
        here, or cannot be fetched (offline, no disk) and are not present, are left out."""
        failed = self.catalog.get(failed_model_id)
        task = task or (failed.tasks[0] if failed else Task.TEXT_TO_VIDEO)
        ranked = []
        for entry in self.catalog.values():
            if entry.model_id == failed_model_id or task not in entry.tasks:
                continue
            suggestion = self._score(entry, failed, device, task)
            if suggestion is not None:
                ranked.append(suggestion)
        ranked.sort(key=lambda s: (s.rank, -(s.entry.download_gb or 0.0)), reverse=True)
        return ranked[:limit]

    def _score(
        self, entry: CatalogEntry, failed: CatalogEntry | None, device: DeviceBudget, task: Task
    ) -> Suggestion | None:
        local = self.is_available(entry.model_id)
        same_task = set(entry.tasks) >= set(failed.tasks if failed else (task,))
        same_family = failed is not None and entry.family == failed.family
        reasons = [f"does {' and '.join(t.value for t in entry.tasks)}"]
        if failed is not None:
            reasons.append(f"same family as {failed.model_id}" if same_family else f"another family ({entry.family})")
        score = entry.quality * 10.0
        if entry.built_in:
            reasons.append("built here from code in about a second, runs anywhere — but its video is noise")
            return Suggestion(entry, score, local, True, tuple(reasons), same_task, same_family)
        if device.vram_gb is None:
            if not entry.runs_on_cpu:
                return None
            reasons.append("runs on the CPU")
        elif entry.min_vram_gb is None:
            score -= 15  # may well fit, but nobody says so: below the models known to fit
            reasons.append(f"memory need not stated ({device.vram_gb:g} GB measured)")
        elif entry.min_vram_gb > device.vram_gb:
            return None
        else:
            reasons.append(f"needs {entry.min_vram_gb:g} GB VRAM, {device.vram_gb:g} GB measured")
            if entry.recommended_vram_gb is not None and entry.recommended_vram_gb <= device.vram_gb:
                score += 5
                reasons.append("fits without offloading")
        if local:
            score += 20
            reasons.append("already downloaded")
        elif not device.online:
            return None
        elif entry.download_gb is None:
            score -= 10
            reasons.append("download size not stated")
        elif entry.download_gb > device.disk_free_gb:
            return None
        else:
            score -= min(10.0, entry.download_gb / 10)
            reasons.append(f"~{entry.download_gb:g} GB to download")
        return Suggestion(entry, score, local, True, tuple(reasons), same_task, same_family)


# -- docs/models.md's tables, generated from the registry and the catalogue --------------------------------------
#: The generated part of ``docs/models.md`` lies between these lines; ``python -m components.store --write
#: docs/models.md`` replaces it (re-run after a family is added), a test checks that it is current.
DOC_BEGIN = "<!-- generated by `python -m components.store --write docs/models.md`: do not edit by hand -->"
DOC_END = "<!-- end of the generated tables -->"


def _shape_rules(rules: object) -> str:
    side = getattr(rules, "side_multiple", 16)
    frames = getattr(rules, "frame_multiple", 4)
    steps = getattr(rules, "min_steps", 1)
    return f"sides ÷{side}, frames {frames}k+1" + (f", steps ≥ {steps}" if steps > 1 else "")


def _figure(value: float | None, unit: str = " GB") -> str:
    return "not stated" if value is None else f"{value:g}{unit}"


def families_markdown() -> str:
    """One row per registered family: pipeline class, shape rules, image input, tiling, offload, tiny model."""
    rows = [
        "| family | pipeline class | tasks | shape rules | image (I2V) | VAE tiling | CPU offload | tiny model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        image = "required" if family.needs_image else "accepted" if family.takes_image else "refused"
        rows.append(
            f"| `{family.name}` ({family.label}) | `{family.pipeline_class}` | "
            f"{', '.join(task.value for task in family.tasks)} | {_shape_rules(family.rules)} | {image} | "
            f"{'yes' if family.supports_tiling else 'no'} | {'yes (CUDA only)' if family.supports_offload else 'no'} | "
            f"`{family.tiny_model_id}` |"
        )
    return "\n".join(rows)


def catalog_markdown(entries: Iterable[CatalogEntry] = ENTRIES) -> str:
    """One row per known model: family, tasks, sizes and memory as sourced, smaller sibling, offered here or not."""
    supported = {family.name for family in FAMILIES}
    rows = [
        "| model | family | tasks | parameters | download | least VRAM | recommended VRAM | smaller sibling | "
        "offered | source |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        if entry.built_in:
            size, least, recommended, parameters = "built here (< 1 MB)", "CPU is fine", "—", "tiny"
        else:
            size, parameters = _figure(entry.download_gb), f"{entry.params_b:g} B"
            least, recommended = _figure(entry.min_vram_gb), _figure(entry.recommended_vram_gb)
        links = " ".join(f"<{url.strip()}>" for url in entry.source.split(";") if url.strip().startswith("http"))
        rows.append(
            f"| `{entry.model_id}` | `{entry.family}` | {', '.join(task.value for task in entry.tasks)} | "
            f"{parameters} | {size} | {least} | {recommended} | "
            f"{f'`{entry.smaller}`' if entry.smaller else '—'} | "
            f"{'yes' if entry.family in supported else 'not yet (family not registered)'} | "
            f"{links or entry.source} |"
        )
    return "\n".join(rows)


def models_markdown() -> str:
    """The generated block of ``docs/models.md``: the families, then the catalogue, with their markers."""
    return "\n".join(
        [
            DOC_BEGIN,
            "",
            "### Families",
            "",
            families_markdown(),
            "",
            "### The catalogue",
            "",
            catalog_markdown(),
            "",
            DOC_END,
        ]
    )


def with_generated_tables(text: str) -> str:
    """``text`` (the doc) with its generated block replaced by the current one; ``ValueError`` without markers."""
    start, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if start < 0 or end < start:
        raise ValueError("the document has no generated block (its begin and end markers)")
    return text[:start] + models_markdown() + text[end + len(DOC_END) :]
