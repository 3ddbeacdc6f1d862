"""The adjustment ladder for out-of-memory, cheapest loss of quality first, each rung chosen by the planner:

    0. free memory          (the worker already ran gc/empty-cache/malloc_trim; restart it if memory stayed held)
    1. VAE tiling           (for a decode OOM with latents kept: the same request, so denoising is not repeated)
    2. model CPU offload    (CUDA only)
    3. fewer frames         (the most frames, 4k+1, predicted to fit at the requested size)
    4. lower resolution     (the largest size, sides ÷16, aspect ratio kept, predicted to fit)
    5. fewer frames *and* lower resolution (down to the floors)
    6. a smaller compatible model
    (fewer steps is not a rung: steps do not change peak memory — the calibration has no term for them)

A rung is skipped when the planner predicts it does not fit — on the tiny VAE, tiling can *raise* the peak, and
then the calibration says so. Below the floors (a quarter of the frames, half the side) the request is no longer
what was asked for: ``PreviewDegrader`` offers a labelled preview instead, and nothing at all when even the
smallest setting does not fit. Every change is a line for the user (``"num_frames 17 → 9 to fit in 400 MiB"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from components.memory import MemoryPlanner, format_bytes, join_parameters, split_parameters
from components.pipeline import RunOptions
from components.request import LIMITS, GenerationRequest
from recovery.classify import error_chain
from recovery.errors import WorkerCrashedError
from recovery.errors import OutOfMemoryError
from recovery.ports import Adjustment
from recovery.taxonomy import EnhancedFailureType, ErrorContext

__all__ = ["Choice", "MemoryLadder", "PreviewDegrader", "WorkerMemoryFreer", "choose_setting", "preview_setting",
           "frame_counts", "scaled_sizes"]


@dataclass(frozen=True)
class Choice:
    """A setting the planner predicts to fit, and the lines that say how it differs from the request."""

    request: GenerationRequest
    options: RunOptions
    estimate: int
    changes: tuple[str, ...]
    rung: str
    degraded: bool = False


def frame_counts(upper: int, lower: int = 1) -> list[int]:
    """Valid Wan frame counts (4k+1) below ``upper`` and at least ``lower``, largest first."""
    top = (upper - 2) // LIMITS.frame_multiple * LIMITS.frame_multiple + 1
    return [f for f in range(top, 0, -LIMITS.frame_multiple) if f >= lower]


def scaled_sizes(width: int, height: int, *, min_share: float = 0.0, tolerance: float = 0.1) -> list[tuple[int, int]]:
    """Smaller (width, height) pairs, sides ÷16, aspect ratio within ``tolerance``, largest first."""
    step, aspect, sizes = LIMITS.side_multiple, width / height, []
    long_side = max(width, height)
    for side in range(long_side - step, step - 1, -step):
        if side < long_side * min_share:
            break
        other = max(step, round(side * min(width, height) / long_side / step) * step)
        w, h = (side, other) if width >= height else (other, side)
        if abs(w / h - aspect) / aspect <= tolerance and (w, h) not in sizes:
            sizes.append((w, h))
    return sizes


def _variants(options: RunOptions, device: str) -> list[RunOptions]:
    """The options to try for one size, cheapest loss first: as asked, tiling on, (CUDA) offload on."""
    variants = [options]
    if not options.vae_tiling:
        variants.append(replace(options, vae_tiling=True))
    if device == "cuda" and not options.model_cpu_offload:
        variants += [replace(v, model_cpu_offload=True) for v in list(variants)]
    return variants


def _option_lines(old: RunOptions, new: RunOptions) -> list[str]:
    lines = []
    for name in ("vae_tiling", "model_cpu_offload"):
        if getattr(old, name) != getattr(new, name):
            lines.append(f"{name} {'on' if getattr(old, name) else 'off'} → {'on' if getattr(new, name) else 'off'}")
    return lines


def _request_lines(old: GenerationRequest, new: GenerationRequest) -> list[str]:
    lines = []
    if old.num_frames != new.num_frames:
        lines.append(f"num_frames {old.num_frames} → {new.num_frames}")
    if (old.width, old.height) != (new.width, new.height):
        lines.append(f"resolution {old.width}×{old.height} → {new.width}×{new.height} (aspect ratio kept)")
    if old.model_id != new.model_id:
        lines.append(f"model_id {old.model_id} → {new.model_id} (a smaller compatible model)")
    return lines


def _fitting(planner: MemoryPlanner, request: GenerationRequest, options: RunOptions, budget: int | None,
             device: str) -> RunOptions | None:
    for variant in _variants(options, device):
        if planner.fits(request, variant, budget):
            return variant
    return None


def _candidates(request: GenerationRequest, min_frames: int, min_share: float,
                smaller_models: Sequence[str]) -> Iterator[tuple[str, GenerationRequest]]:
    yield "memory switches", request
    for frames in frame_counts(request.num_frames, min_frames):
        yield "fewer frames", replace(request, num_frames=frames)
    for width, height in scaled_sizes(request.width, request.height, min_share=min_share):
        yield "lower resolution", replace(request, width=width, height=height)
    smallest = min([f for f in frame_counts(request.num_frames, min_frames)] or [request.num_frames])
    for width, height in scaled_sizes(request.width, request.height, min_share=min_share):
        yield "fewer frames and lower resolution", replace(request, num_frames=smallest, width=width, height=height)
    for model_id in smaller_models:
        yield "smaller model", replace(request, model_id=model_id)


def choose_setting(planner: MemoryPlanner, request: GenerationRequest, options: RunOptions, budget: int | None,
                   *, device: str = "cpu", decode_retry: bool = False, min_frames_share: float = 0.25,
                   min_side_share: float = 0.5, smaller_models: Sequence[str] = ()) -> Choice | None:
    """The first rung of the ladder whose largest setting the planner predicts to fit ``budget``."""
    min_frames = max(1, math.ceil(request.num_frames * min_frames_share))
    for rung, candidate in _candidates(request, min_frames, min_side_share, smaller_models):
        chosen = _fitting(planner, candidate, options, budget, device)
        if chosen is None or (candidate == request and chosen == options):
            continue
        estimate = planner.estimate(candidate, chosen) or 0
        lines = _option_lines(options, chosen) + _request_lines(request, candidate)
        why = f" to fit in {format_bytes(budget)} (predicted {format_bytes(estimate)})" if budget else ""
        lines = [line + why for line in lines]
        if decode_retry and candidate == request:
            lines.append("the kept latents are decoded again: denoising is not repeated")
        return Choice(candidate, chosen, estimate, tuple(lines), rung)
    return None


def preview_setting(planner: MemoryPlanner, request: GenerationRequest, options: RunOptions, budget: int | None,
                    *, device: str = "cpu", max_frames: int = 9) -> Choice | None:
    """The largest preview (frames × pixels, at most ``max_frames`` frames, aspect kept) predicted to fit."""
    sizes = [(request.width, request.height), *scaled_sizes(request.width, request.height)]
    top = min(request.num_frames, max_frames)
    frames = [top, *frame_counts(top)]
    for _, f, (w, h) in sorted(((f * w * h, f, (w, h)) for f in frames for w, h in sizes), reverse=True):
        candidate = replace(request, num_frames=f, width=w, height=h)
        chosen = _fitting(planner, candidate, options, budget, device)
        if chosen is not None and (candidate, chosen) != (request, options):
            estimate = planner.estimate(candidate, chosen) or 0
            label = (f"preview: {f} frames at {w}×{h} instead of {request.num_frames} at "
                     f"{request.width}×{request.height} — the full request does not fit in "
                     f"{format_bytes(budget) if budget else 'the free memory'}")
            lines = [label, *_option_lines(options, chosen), *_request_lines(request, candidate)]
            return Choice(candidate, chosen, estimate, tuple(lines), "preview", degraded=True)
    return None


def _out_of_memory(ctx: ErrorContext) -> OutOfMemoryError | None:
    return next((link for link in error_chain(ctx.original_error) if isinstance(link, OutOfMemoryError)), None)


def _budget(ctx: ErrorContext, default: int | None, planner: MemoryPlanner, request: GenerationRequest,
            options: RunOptions) -> int | None:
    """The cap the OOM happened under, else the configured one, else free GPU memory, else 3/4 of the need."""
    error = _out_of_memory(ctx)
    cap = (error.data.get("memory_cap") if error is not None else None) or default
    if cap is None and ctx.system_state.get("cuda_free_bytes"):
        cap = int(ctx.system_state["cuda_free_bytes"])
    if cap is None:
        estimate = planner.estimate(request, options)
        cap = int(estimate * 0.75) if estimate else None
    return cap


@dataclass
class MemoryLadder:
    """``recovery.ports.ParameterAdjuster`` for out-of-memory: learn from the failure, then climb the ladder.

    ``budget``: the worker's memory cap when the error does not carry one. ``smaller_models``: model id → ids of
    smaller compatible models, best first.
    """

    planner: MemoryPlanner
    budget: int | None = None
    device: str = "cpu"
    freer: WorkerMemoryFreer | None = None  # rung 0: restart the worker when memory stayed held
    smaller_models: Mapping[str, Sequence[str]] | None = None
    min_frames_share: float = 0.25
    min_side_share: float = 0.5
    restart_after_oom: bool = True  # measured here: a worker after an OOM failed runs a fresh one completed

    def adjust(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        if ctx.failure_type is not EnhancedFailureType.VRAM_EXHAUSTION:
            return None
        request, options = split_parameters(parameters)
        budget = _budget(ctx, self.budget, self.planner, request, options)
        self.planner.record(request, options, None, False, memory_cap=budget)  # learn before choosing
        error = _out_of_memory(ctx)
        decode_retry = bool(error is not None and error.data.get("phase") == "decode"
                            and error.data.get("latents_kept") and not options.vae_tiling)
        choice = choose_setting(self.planner, request, options, budget, device=self.device,
                                decode_retry=decode_retry, min_frames_share=self.min_frames_share,
                                min_side_share=self.min_side_share,
                                smaller_models=(self.smaller_models or {}).get(request.model_id, ()))
        if choice is None:
            return None
        freed: list[str] = []
        reuses_latents = decode_retry and choice.request == request  # a restart would lose the kept latents
        if self.freer is not None and not reuses_latents:
            freed = self.freer.make_room(request.model_id, force=self.restart_after_oom)
        return Adjustment(join_parameters(choice.request, choice.options), (*freed, *choice.changes), choice.rung)


@dataclass
class PreviewDegrader:
    """``recovery.ports.Degrader``: when nothing fits at the requested quality, a labelled preview."""

    planner: MemoryPlanner
    budget: int | None = None
    device: str = "cpu"
    max_frames: int = 9

    def degrade(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        if ctx.failure_type is not EnhancedFailureType.VRAM_EXHAUSTION:
            return None
        request, options = split_parameters(parameters)
        budget = _budget(ctx, self.budget, self.planner, request, options)
        choice = preview_setting(self.planner, request, options, budget, device=self.device,
                                 max_frames=self.max_frames)
        if choice is None:
            return None
        return Adjustment(join_parameters(choice.request, choice.options), choice.changes, choice.changes[0])


@dataclass
class WorkerMemoryFreer:
    """``recovery.ports.ResourceFreer`` for a ``components.worker.Worker``.

    After an OOM the worker has already collected garbage, emptied caches and trimmed glibc's free lists. Memory
    "came back" when the worker holds no more than it does idle with the model loaded (the planner's prediction
    for the smallest request) plus ``tolerance`` of the cap; otherwise only a fresh process gives it back — here a
    worker that still held 48 MiB more than idle after an OOM failed a run that a fresh one completed. With a
    ``planner``, ``free_memory`` does nothing for a request predicted not to fit even in a fresh worker.
    """

    worker: Any
    planner: MemoryPlanner | None = None
    tolerance: float = 0.05
    model_id: str = "kintsugi/tiny-wan-random"

    def held_bytes(self) -> tuple[int, int] | None:
        """(bytes the worker holds above its start, its cap), or ``None`` when it runs without a cap."""
        info = self.worker.info or {}
        if not info.get("address_space_limit") or not info.get("memory_cap"):
            return None
        base = info["address_space_limit"] - info["memory_cap"]
        return int(self.worker.stats()["vm_size"]) - base, int(info["memory_cap"])

    def _idle_bytes(self, cap: int) -> float:
        smallest = GenerationRequest(prompt="-", num_frames=1, width=16, height=16, model_id=self.model_id)
        estimate = self.planner.estimate(smallest) if self.planner is not None else None
        return estimate if estimate is not None else 0.5 * cap

    def make_room(self, model_id: str | None = None, *, force: bool = False) -> list[str]:
        """Restart the worker when memory stayed held after a failure (the ladder's rung 0); ``force``: after
        any out-of-memory, whatever it holds."""
        held = self.held_bytes()
        if held is None:
            return []
        if model_id:
            self.model_id = model_id
        if not force and held[0] <= self._idle_bytes(held[1]) + self.tolerance * held[1]:
            return []
        self.worker.restart()
        return [f"worker restarted: it still held {format_bytes(held[0])} of its {format_bytes(held[1])} after the "
                f"failure"]

    def free_memory(self, ctx: ErrorContext) -> Sequence[str]:
        if self.planner is not None and ctx.user_parameters.get("prompt") is not None:
            request, options = split_parameters(ctx.user_parameters)
            cap = (self.worker.info or {}).get("memory_cap")
            if cap and not self.planner.fits(request, options, cap):
                return []  # even a fresh worker would not fit it: retrying the same request is futile
        return self.make_room(ctx.model_id)

    def restart_worker(self, ctx: ErrorContext) -> Sequence[str]:
        if isinstance(ctx.original_error, WorkerCrashedError):  # the supervisor already started a fresh one
            return ["a fresh worker took over from the one that stopped"]
        self.worker.restart()
        return ["worker restarted"]
