"""The memory switches of the GPU ladder as data: which device each needs, what it saves of the weights held on
the device, and what it costs in time — so that the ladder can choose "≈10× the time, full quality" or "quicker, at
320p" by prediction, and say which it chose.

    0. free memory          (the worker already emptied its caches; restart it — costs a model load)
    1. VAE tiling           (the planner measures it: decode ≈1.8× the time here at 480×832)
    2. model CPU offload    (CUDA: one component on the device at a time)
    3. group offload        (CUDA: block level, one block per group, the next one prefetched on a CUDA stream)
    4. layerwise casting    (the transformer stored in float8_e4m3fn, computed in the run dtype; CPU too)
    5. sequential offload   (CUDA: every leaf module on the device only while it runs)

The planner has measurements of tiling and of model offload once it has run them (its fit is keyed by those two),
and none of the others: for a switch it has no measurement of, the prediction is the planner's need without the
switch less the weight bytes the switch takes off the device (``resident_bytes``), from the model's weight bytes
per component (``components.memory.prior.weight_bytes``) and a documented factor. The time ratios are measured here
(``bench/bench_rungs.py`` for layerwise casting on the CPU) or documented; each cites its source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from components.generation.families import family_for_model_id
from components.generation.request import GenerationRequest, RunOptions

__all__ = [
    "OFFLOADS",
    "RUNGS",
    "SWITCHES",
    "ModelWeights",
    "Rung",
    "WeightBook",
    "WeightsOf",
    "cost_line",
    "layerwise_supported",
    "measured_part",
    "predicted_bytes",
    "resident_bytes",
    "rung",
    "switch_variants",
    "time_ratio",
    "unmeasured",
]

#: The offload switches: at most one is on (diffusers refuses to stack their hooks).
OFFLOADS = ("model_cpu_offload", "group_offload", "sequential_offload")
#: Families whose transformer class declares the layers kept out of the cast (diffusers'
#: ``_skip_layerwise_casting_patterns``: embeddings and norms); ``tests/memory`` checks each against diffusers.
LAYERWISE_FAMILIES = frozenset(
    {"wan2.1-t2v", "wan2.1-i2v", "wan2.2-ti2v", "wan2.2-a14b", "cogvideox", "cogvideox-i2v", "ltx", "hunyuanvideo-t2v"}
)
_TRANSFORMERS = ("transformer", "transformer_2")  # Wan 2.2 A14B has two experts, both cast


@dataclass(frozen=True)
class ModelWeights:
    """A model's weight bytes per component as loaded (in the run dtype), and that dtype's bytes per element."""

    components: Mapping[str, int]
    dtype_bytes: int = 2

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def transformer(self) -> int:
        return sum(self.components.get(name, 0) for name in _TRANSFORMERS)


#: A model id → its weights, ``None`` when not known (not cached yet).
WeightsOf = Callable[[str], "ModelWeights | None"]


@dataclass
class WeightBook:
    """What each model's weights take per component, told once its snapshot is cached (``WeightBook.of`` is a
    ``WeightsOf``); shared by the service's plan and the recovery ladder."""

    _known: dict[str, ModelWeights] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def know(self, model_id: str, components: Mapping[str, int], dtype_bytes: int = 2) -> None:
        with self._lock:
            self._known[model_id] = ModelWeights(dict(components), dtype_bytes)

    def of(self, model_id: str) -> ModelWeights | None:
        with self._lock:
            return self._known.get(model_id)


@dataclass(frozen=True)
class Rung:
    """One memory switch (a ``RunOptions`` field): the device it needs, the share of each component's weights it
    leaves on the device, and the time it costs — a ratio of the phase's seconds, per device kind."""

    name: str
    label: str
    cuda_only: bool
    quality: str
    phase: str  # the phase it slows: "denoising", "decode" or "run"
    time_ratio: Mapping[str, float]
    source: str

    def ratio(self, device: str) -> float:
        return self.time_ratio.get(device, self.time_ratio.get("cuda", 1.0))


RUNGS: tuple[Rung, ...] = (
    # Measured on this CPU (issue #16): tiling at 480×832 cut decode memory 4.3× at 1.8× the decode time.
    Rung("vae_tiling", "VAE tiling", False, "full quality", "decode", {"cpu": 1.8, "cuda": 1.8}, "measured here"),
    # diffusers' memory guide: model offloading has "a negligible impact on inference time" — the weights move
    # once per component per run, not per step; 1.1× allows for the transfer of a large text encoder.
    Rung(
        "model_cpu_offload",
        "model CPU offload",
        True,
        "full quality",
        "run",
        {"cuda": 1.1},
        "diffusers memory guide (model offloading: negligible impact on inference time)",
    ),
    # diffusers' memory guide: with streams group offloading overlaps transfer and compute "with minimal compromise
    # to end-to-end generation time"; vllm-omni PR #1223 measured block offload with prefetch on Wan 2.1 T2V on an
    # H100 at 77.3 s against 74.6 s (1.04×). Without streams it is far slower (diffusers PR #11682, Flux: 7.2×).
    Rung(
        "group_offload",
        "group offload",
        True,
        "full quality",
        "denoising",
        {"cuda": 1.1},
        "diffusers memory guide; vllm-omni PR #1223 (Wan 2.1 on an H100: 1.04×)",
    ),
    # CPU: bench/bench_rungs.py (docs/benchmarks.md, "GPU ladder rungs"): 1.18× on the tiny Wan's whole denoise,
    # 1.13× for the 1.3B config's blocks at 1280 tokens (17×256²) — the cast is paid per forward, so the ratio falls
    # as the tokens grow (1.9× at 320 tokens). CUDA: diffusers PR #9177 measured an fp8 e4m3 UNet at 18.89 s against
    # 16.66 s (1.13×).
    Rung(
        "layerwise_casting",
        "layerwise casting (fp8 weights)",
        False,
        "weights stored in fp8: a small loss of quality",
        "denoising",
        {"cpu": 1.2, "cuda": 1.13},
        "bench/bench_rungs.py on the CPU; diffusers PR #9177 on CUDA (1.13×)",
    ),
    # diffusers PR #11682 (Flux on one GPU): sequential CPU offload 68.4 s against 6.6 s without offload (10.4×).
    Rung(
        "sequential_offload",
        "sequential CPU offload",
        True,
        "full quality",
        "denoising",
        {"cuda": 10.0},
        "diffusers PR #11682 (Flux: 68.4 s against 6.6 s)",
    ),
)
SWITCHES = tuple(r.name for r in RUNGS)
_BY_NAME = {r.name: r for r in RUNGS}

# The share of a component's weights each offload leaves on the device at its peak. Group offload: one block per
# group and the next one prefetched — two of Wan's 30 (1.3B) or 40 (14B) blocks, 5–7 %; 10 % leaves room for the
# modules outside the blocks (embeddings, heads), kept whole. Sequential offload: one leaf module at a time —
# diffusers PR #11682 measured 2.4 GB of device memory against 33.9 GB without offload, activations included.
_GROUP_KEEP = 0.10
_SEQUENTIAL_KEEP = 0.02
# Layerwise casting leaves diffusers' skip patterns (patch embedding, condition embedder, norms) in the run dtype:
# 1.9 % of the Wan 2.1 1.3B transformer's weights at its real config (bench/bench_rungs.py prints the share).
_CAST_SKIPPED = 0.02


def rung(name: str) -> Rung:
    return _BY_NAME[name]


def layerwise_supported(model_id: str) -> bool:
    """Whether the model's family can store its transformer in fp8 (an unknown model: no)."""
    family = family_for_model_id(model_id)
    return family is not None and family.name in LAYERWISE_FAMILIES


def _on(options: RunOptions) -> set[str]:
    return {name for name in SWITCHES if getattr(options, name)}


def _with(options: RunOptions, *names: str) -> RunOptions:
    """``options`` with ``names`` on, an offload among them replacing the one that was on."""
    changes = {name: False for name in OFFLOADS} if any(n in OFFLOADS for n in names) else {}
    changes.update({name: True for name in names})
    return replace(options, **changes)


def switch_variants(options: RunOptions, device: str, *, layerwise: bool = True) -> list[RunOptions]:
    """The switch settings to try for one size, cheapest loss first, none below what ``options`` already has:
    as asked, tiling; then (CUDA) model offload, group offload, each without and with tiling; layerwise casting
    (with the group offload on CUDA); sequential offload (its own, full quality: no cast)."""
    variants = [options]

    def add(*names: str) -> None:
        for candidate in (_with(options, *names), _with(options, "vae_tiling", *names)):
            if candidate not in variants and _level(candidate) >= _level(options):
                variants.append(candidate)

    add()
    cuda = device == "cuda"
    if cuda:
        add("model_cpu_offload")
        add("group_offload")
    if layerwise and cuda:
        add("group_offload", "layerwise_casting")
    elif layerwise:
        add("layerwise_casting")
    if cuda:
        add("sequential_offload")
    return variants


def _level(options: RunOptions) -> int:
    """Where on the ladder an offload setting is (later rungs never go back to an earlier offload)."""
    levels = [index + 1 for index, name in enumerate(OFFLOADS) if getattr(options, name)]
    return max(levels, default=0)


def unmeasured(options: RunOptions) -> set[str]:
    """The switches of ``options`` the planner has no term for (its fit is keyed by tiling and model offload)."""
    return _on(options) - {"vae_tiling", "model_cpu_offload"}


def measured_part(options: RunOptions) -> RunOptions:
    """``options`` with only the switches the planner measures."""
    return replace(options, **{name: False for name in unmeasured(options)})


def resident_bytes(weights: ModelWeights, options: RunOptions) -> int:
    """The weight bytes ``options`` leave on the device at the peak: each component's share, and with model
    offload only the largest component at a time (diffusers: one main component on the device at once)."""
    keep = _SEQUENTIAL_KEEP if options.sequential_offload else _GROUP_KEEP if options.group_offload else 1.0
    on_device = {}
    for name, size in weights.components.items():
        share = keep
        if options.layerwise_casting and name in _TRANSFORMERS:
            share *= _CAST_SKIPPED + (1 - _CAST_SKIPPED) / max(1, weights.dtype_bytes)
        on_device[name] = size * share
    if options.model_cpu_offload:
        return int(max(on_device.values(), default=0))
    return int(sum(on_device.values()))


def predicted_bytes(
    estimate: Callable[[GenerationRequest, RunOptions], int | None],
    request: GenerationRequest,
    options: RunOptions,
    weights: ModelWeights | None,
) -> int | None:
    """The need of ``request`` under ``options``: the planner's (``estimate``) for the switches it measures, less
    the weight bytes the others take off the device; ``None`` when the planner knows nothing, and the planner's
    need without them (no saving claimed) when the model's weights are unknown."""
    measured = measured_part(options)
    base = estimate(request, measured)
    if base is None or weights is None:
        return base
    if options.model_cpu_offload:
        # The planner's fit without a measurement of model offload falls back to its plain one: then the offload
        # is predicted like the others, from its need without it.
        without = replace(measured, model_cpu_offload=False)
        before = estimate(request, without)
        if before is not None and base in (before, estimate(request, replace(without, vae_tiling=False))):
            base, measured = before, without
    saved = resident_bytes(weights, measured) - resident_bytes(weights, options)
    return max(0, base - saved)


def time_ratio(old: RunOptions, new: RunOptions, device: str) -> float:
    """At most how many times the run's seconds the switches ``new`` turns on cost: the ratios of one phase
    multiply; of two phases (tiling slows the decode, casting the denoising) the run is slowed by at most the
    larger; a whole-run ratio (model offload) applies on top."""
    whole = 1.0
    phases: dict[str, float] = {}
    for name in sorted(_on(new) - _on(old)):
        step = rung(name)
        if step.phase == "run":
            whole *= step.ratio(device)
        else:
            phases[step.phase] = phases.get(step.phase, 1.0) * step.ratio(device)
    return whole * max(phases.values(), default=1.0)


def cost_line(name: str, device: str) -> str:
    """What turning ``name`` on costs, for a change line: "≈10× the denoising time, full quality"."""
    step = rung(name)
    ratio = step.ratio(device)
    took = f"≈{ratio:.3g}× the {step.phase} time" if ratio > 1.0 else "no slower"
    return f"{took}, {step.quality} ({step.source})"
