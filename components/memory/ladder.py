"""The adjustment ladder for out-of-memory, cheapest loss of quality first, each rung chosen by the planner's
prediction, and ``plan_memory``: the plan a request runs with, made before anything runs.

    0. free memory          (the worker already ran gc/empty-cache/malloc_trim; restart it if memory stayed held)
    1. streamed decode      (for a decode OOM with latents kept: the same request, its kept latents decoded again
                             chunk by chunk into the mp4 writer — the same frames, denoising not repeated; tiled,
                             with tiles sized from the frame, for CogVideoX and HunyuanVideo, whose decoder's
                             working set for one chunk is the peak — labelled: the tiles are blended at the seams)
       VAE tiling           (likewise the same request, where the planner predicts it lowers the peak)
    2. model CPU offload    (CUDA only; ≈1.1× the time)
    3. group offload        (CUDA only: block level, CUDA-stream prefetch; ≈1.1× the denoising time)
    4. layerwise casting    (fp8 weight storage where the family supports it, CPU too; ≈1.1–1.2× the denoising
                             time, a small loss of quality, said in its line)
    5. sequential offload   (CUDA only; ≈10× the denoising time, full quality)
    6. fewer frames         (the most frames, 4k+1, predicted to fit at the requested size)
    7. lower resolution     (the largest size, sides ÷16, aspect ratio kept, predicted to fit)
    8. fewer frames *and* lower resolution (down to the floors)
    9. a smaller model      (the catalogue's smaller sibling — Wan 2.1 14B → 1.3B, Wan 2.2 A14B → TI2V-5B — at the
                             setting first asked, or its first rung that fits; only with the user's consent to
                             another model, and then marked like a fallback: ``smaller_model_setting``)
    (fewer steps is not a rung: steps do not change peak memory — the activations of one step are freed before
    the next, and the calibration has no term for them; fewer steps only make the video worse, not smaller)

Rungs 1–5 are memory switches (``components.memory.rungs``: what each saves and costs, with sources); each one
turned on is a change line with its time cost ("group_offload off → on …: ≈1.1× the denoising time, full
quality"), and the predicted seconds of a plan choice carry the same ratios. A switch the planner has no
measurement of is predicted from the model's weight bytes (``weights``: model id → ``ModelWeights``).

Before a run, ``plan_notice`` tells the user what planning would change, with the choices (fewer frames instead,
lower resolution instead, run anyway, cancel), each with its predicted memory and time; ``PlanNotice.plan`` turns
the chosen one into the plan the request runs with.

A rung is skipped when the planner predicts it does not fit — on the tiny VAE, tiling can *raise* the peak, and
then the calibration says so. Below the floors (a quarter of the frames, half the side) the request is no longer
what was asked for: ``preview_setting`` offers a labelled preview instead, and nothing at all when even the
smallest setting does not fit. Every change is a line for the user (``"num_frames 17 → 9 to fit in 400 MiB"``).
The recovery engine climbs the same ladder through ``components.memory.adapters``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from components.generation.families import family_for_model_id, rules_for_model
from components.generation.request import LIMITS, GenerationRequest, RunOptions, join_parameters
from components.memory.planner import MemoryPlanner
from components.memory.rungs import (
    SWITCHES,
    ModelWeights,
    WeightsOf,
    cost_line,
    layerwise_supported,
    measured_part,
    predicted_bytes,
    switch_variants,
    time_ratio,
    unmeasured,
)
from components.memory.rungs import rung as rung_of
from recovery.errors import InvalidParameterError
from recovery.messages import format_bytes

__all__ = [
    "PLAN_CHOICES",
    "Choice",
    "MemoryPlan",
    "PlanNotice",
    "PlanOption",
    "choose_setting",
    "frame_counts",
    "plan_memory",
    "plan_notice",
    "preview_setting",
    "scaled_sizes",
    "smaller_model_setting",
]

#: The answers to a plan notice: ``generate(..., plan_choice=...)`` takes one of them.
PLAN_CHOICES = ("fewer_frames", "lower_resolution", "run_anyway", "cancel")
#: Predicted seconds of a setting (``TimeModel.estimate(...).total_s``), ``None`` when unknown.
TimeOf = Callable[[GenerationRequest, RunOptions], "float | None"]
#: A memory switch this many times slower (sequential offload) is the user's choice, told before the run.
SLOW_RATIO = 2.0


@dataclass(frozen=True)
class MemoryPlan:
    """What to run: the (possibly adjusted) request and options, the prediction, and each change as a line."""

    request: GenerationRequest
    options: RunOptions
    estimate_bytes: int
    budget_bytes: int | None
    fits: bool
    changes: tuple[str, ...] = ()
    degraded: bool = False
    asked: GenerationRequest | None = None  # the request before planning (None: nothing was planned)

    @property
    def parameters(self) -> dict[str, Any]:
        return join_parameters(self.request, self.options)

    @property
    def planned_down(self) -> bool:
        """Whether planning lowered the frames or the resolution: the video will not be the one asked for."""
        return self.asked is not None and _shape(self.asked) != _shape(self.request)


@dataclass(frozen=True)
class Choice:
    """A setting the planner predicts to fit, and the lines that say how it differs from the request."""

    request: GenerationRequest
    options: RunOptions
    estimate: int
    changes: tuple[str, ...]
    rung: str
    degraded: bool = False


def _shape(request: GenerationRequest) -> tuple[int, int, int]:
    return request.num_frames, request.width, request.height


def _described(request: GenerationRequest) -> str:
    return f"{request.num_frames} frames at {request.width}×{request.height}"


def frame_counts(upper: int, lower: int = 1, *, multiple: int = LIMITS.frame_multiple) -> list[int]:
    """Valid frame counts (``multiple``·k+1: Wan's 4k+1 by default) below ``upper`` and at least ``lower``, largest
    first."""
    top = (upper - 2) // multiple * multiple + 1
    return [f for f in range(top, 0, -multiple) if f >= lower]


def scaled_sizes(
    width: int, height: int, *, min_share: float = 0.0, tolerance: float = 0.1, step: int = LIMITS.side_multiple
) -> list[tuple[int, int]]:
    """Smaller (width, height) pairs, sides divisible by ``step`` (Wan's 16 by default), aspect ratio within
    ``tolerance``, largest first."""
    aspect, sizes = width / height, []
    long_side = max(width, height)
    for side in range(long_side - step, step - 1, -step):
        if side < long_side * min_share:
            break
        other = max(step, round(side * min(width, height) / long_side / step) * step)
        w, h = (side, other) if width >= height else (other, side)
        if abs(w / h - aspect) / aspect <= tolerance and (w, h) not in sizes:
            sizes.append((w, h))
    return sizes


def _fewer_frames(request: GenerationRequest, lower: int = 1, upper: int | None = None) -> list[int]:
    """Smaller frame counts the request's model family runs at (CogVideoX 8k+1, Wan 4k+1, …)."""
    multiple = rules_for_model(request.model_id).frame_multiple
    return frame_counts(request.num_frames if upper is None else upper, lower, multiple=multiple)


def _smaller_sizes(request: GenerationRequest, min_share: float = 0.0) -> list[tuple[int, int]]:
    """Smaller sizes the request's model family runs at (Wan 2.2 5B ÷32, Wan ÷16, …)."""
    step = rules_for_model(request.model_id).side_multiple
    return scaled_sizes(request.width, request.height, min_share=min_share, step=step)


def _variants(request: GenerationRequest, options: RunOptions, device: str) -> list[RunOptions]:
    """The switch settings to try for one size, cheapest loss first (``rungs.switch_variants``)."""
    return switch_variants(options, device, layerwise=layerwise_supported(request.model_id))


def _option_lines(old: RunOptions, new: RunOptions, device: str = "cpu", why: str = "") -> list[str]:
    """A line per switch that changed; one turned on says why (``why``) and what it costs in time."""
    lines = []
    for name in (*SWITCHES, "streamed_decode"):
        was, now = getattr(old, name), getattr(new, name)
        if was != now:
            cost = f": {cost_line(name, device)}" if now and name in SWITCHES else ""
            lines.append(f"{name} {'on' if was else 'off'} → {'on' if now else 'off'}{why}{cost}")
    return lines


def _weights_of(weights: WeightsOf | None, request: GenerationRequest) -> ModelWeights | None:
    return weights(request.model_id) if weights is not None else None


def _estimate(
    planner: MemoryPlanner, request: GenerationRequest, options: RunOptions, weights: WeightsOf | None
) -> int | None:
    """The planner's prediction, with the switches it has no measurement of taken off by the weights they move."""
    return predicted_bytes(planner.estimate, request, options, _weights_of(weights, request))


def _fits(
    planner: MemoryPlanner,
    request: GenerationRequest,
    options: RunOptions,
    budget: int | None,
    weights: WeightsOf | None,
) -> bool:
    if planner.fits(request, options, budget):
        return True  # what the planner measured (or its runs taught it) says so
    if budget is None or not (unmeasured(options) or options.model_cpu_offload):
        return False
    estimate = _estimate(planner, request, options, weights)
    return estimate is not None and estimate * (1 + planner.margin) <= budget


def _seconds(time_of: TimeOf, request: GenerationRequest, options: RunOptions, device: str) -> float | None:
    """The time model's seconds for the switches it knows, times the ratios of those it has no term for."""
    known = measured_part(options)
    seconds = time_of(request, known)
    return None if seconds is None else seconds * time_ratio(known, options, device)


def _request_lines(old: GenerationRequest, new: GenerationRequest) -> list[str]:
    lines = []
    if old.num_frames != new.num_frames:
        lines.append(f"num_frames {old.num_frames} → {new.num_frames}")
    if (old.width, old.height) != (new.width, new.height):
        lines.append(f"resolution {old.width}×{old.height} → {new.width}×{new.height} (aspect ratio kept)")
    return lines


def _fit_lines(
    request: GenerationRequest,
    options: RunOptions,
    candidate: GenerationRequest,
    chosen: RunOptions,
    budget: int | None,
    estimate: int,
    device: str = "cpu",
) -> list[str]:
    """How ``candidate``/``chosen`` differ from what was asked, each line saying why (the budget, the prediction)
    and, for a switch, what it costs in time (a lower setting is a smaller video: never slower)."""
    why = f" to fit in {format_bytes(budget)} (predicted {format_bytes(estimate)})" if budget else ""
    return _option_lines(options, chosen, device, why) + [line + why for line in _request_lines(request, candidate)]


def _fitting(
    planner: MemoryPlanner,
    request: GenerationRequest,
    options: RunOptions,
    budget: int | None,
    device: str,
    weights: WeightsOf | None = None,
    *,
    skip: RunOptions | None = None,
) -> RunOptions | None:
    """The first switch setting predicted to fit (never ``skip``: the setting that just failed)."""
    for variant in _variants(request, options, device):
        if variant != skip and _fits(planner, request, variant, budget, weights):
            return variant
    return None


def _candidates(
    request: GenerationRequest, min_frames: int, min_share: float
) -> Iterator[tuple[str, GenerationRequest]]:
    yield "memory switches", request
    for frames in _fewer_frames(request, min_frames):
        yield "fewer frames", replace(request, num_frames=frames)
    for width, height in _smaller_sizes(request, min_share):
        yield "lower resolution", replace(request, width=width, height=height)
    smallest = min(_fewer_frames(request, min_frames) or [request.num_frames])
    for width, height in _smaller_sizes(request, min_share):
        yield "fewer frames and lower resolution", replace(request, num_frames=smallest, width=width, height=height)


def choose_setting(
    planner: MemoryPlanner,
    request: GenerationRequest,
    options: RunOptions,
    budget: int | None,
    *,
    device: str = "cpu",
    decode_retry: bool = False,
    min_frames_share: float = 0.25,
    min_side_share: float = 0.5,
    weights: WeightsOf | None = None,
) -> Choice | None:
    """The first rung of the ladder whose largest setting is predicted to fit ``budget`` — for the request as it
    is, the first switch setting after ``options`` (the one that just failed).

    ``decode_retry`` (the decode ran out of memory, its latents kept): first the streamed decode of the same
    request, chosen by measurement, not prediction — its peak is below the plain decode's for every family
    (``bench/bench_decode.py``) and denoising, which is not repeated, already fitted; a decode only, so it is worth
    its try even where the planner (whose fit may be far off for this allocator) predicts little room."""
    if decode_retry and not options.streamed_decode:
        frame_tiles = _tiled_decode_retry(request.model_id)  # even where tiling was on: the tiles change size
        tiled = options.vae_tiling or frame_tiles
        streamed = replace(options, streamed_decode=True, vae_tiling=tiled)
        why = f" to fit in {format_bytes(budget)}" if budget else ""  # no prediction: the planner has none for it
        said = [*_option_lines(options, streamed, device, why)]
        if frame_tiles:
            said.append(
                "the decode runs in tiles sized from the frame, blended at their seams: "
                "not bit-identical to the untiled decode"
            )
        said.append("the kept latents are decoded again: denoising is not repeated")
        rung = "tiled streamed decode" if tiled else "streamed decode"
        return Choice(request, streamed, planner.estimate(request, streamed) or 0, tuple(said), rung)
    min_frames = max(1, math.ceil(request.num_frames * min_frames_share))
    for rung, candidate in _candidates(request, min_frames, min_side_share):
        skip = options if candidate == request else None
        chosen = _fitting(planner, candidate, options, budget, device, weights, skip=skip)
        if chosen is None:
            continue
        estimate = _estimate(planner, candidate, chosen, weights) or 0
        lines = _fit_lines(request, options, candidate, chosen, budget, estimate, device)
        if decode_retry and candidate == request:
            lines.append("the kept latents are decoded again: denoising is not repeated")
        if candidate == request:
            rung = _switch_rung(options, chosen)
        return Choice(candidate, chosen, estimate, tuple(lines), rung)
    return None


def _tiled_decode_retry(model_id: str) -> bool:
    """The model's family decodes in chunks whose own working set is the decode's peak, so its decode retry
    streams tiled (``Family.tiled_decode_retry``); a model not known by id gets the plain streamed retry."""
    family = family_for_model_id(model_id)
    return family is not None and family.tiled_decode_retry


def _switch_rung(old: RunOptions, new: RunOptions) -> str:
    """The rung a switch setting stands for: the last switch of the ladder it turns on."""
    turned_on = [name for name in SWITCHES if getattr(new, name) and not getattr(old, name)]
    return rung_of(turned_on[-1]).label if turned_on else "memory switches"


def smaller_model_setting(
    planner: MemoryPlanner,
    asked: GenerationRequest,
    current: GenerationRequest,
    options: RunOptions,
    budget: int | None,
    sibling: str,
    *,
    device: str = "cpu",
    min_frames_share: float = 0.25,
    min_side_share: float = 0.5,
    weights: WeightsOf | None = None,
) -> Choice | None:
    """The last rung, once no lower setting of ``current``'s model fits: ``sibling`` (its smaller model) at the
    setting first ``asked`` when predicted to fit, else at its first rung that is; ``None`` when nothing fits.
    The caller checks the user's consent to another model; the lines name both models and why."""
    candidate = replace(asked, model_id=sibling)
    chosen = _fitting(planner, candidate, options, budget, device, weights)
    if chosen is not None:
        request, request_options = candidate, chosen
    else:
        lowered = choose_setting(
            planner,
            candidate,
            options,
            budget,
            device=device,
            min_frames_share=min_frames_share,
            min_side_share=min_side_share,
            weights=weights,
        )
        if lowered is None:
            return None
        request, request_options = lowered.request, lowered.options
    estimate = _estimate(planner, request, request_options, weights) or 0
    room = format_bytes(budget) if budget else "the free memory"
    lines = [
        f"model {current.model_id} → {sibling} (its smaller sibling; another model was allowed): no lower setting "
        f"of {current.model_id} is predicted to fit in {room}",
        *_fit_lines(current, options, request, request_options, budget, estimate, device),
    ]
    return Choice(request, request_options, estimate, tuple(lines), "smaller model", degraded=True)


def preview_setting(
    planner: MemoryPlanner,
    request: GenerationRequest,
    options: RunOptions,
    budget: int | None,
    *,
    device: str = "cpu",
    max_frames: int = 9,
    weights: WeightsOf | None = None,
) -> Choice | None:
    """The largest preview (frames × pixels, at most ``max_frames`` frames, aspect kept) predicted to fit."""
    sizes = [(request.width, request.height), *_smaller_sizes(request)]
    top = min(request.num_frames, max_frames)
    frames = [top, *_fewer_frames(request, upper=top)]
    for _, f, (w, h) in sorted(((f * w * h, f, (w, h)) for f in frames for w, h in sizes), reverse=True):
        candidate = replace(request, num_frames=f, width=w, height=h)
        chosen = _fitting(planner, candidate, options, budget, device, weights)
        if chosen is not None and (candidate, chosen) != (request, options):
            estimate = _estimate(planner, candidate, chosen, weights) or 0
            label = (
                f"preview: {f} frames at {w}×{h} instead of {request.num_frames} at "
                f"{request.width}×{request.height} — the full request does not fit in "
                f"{format_bytes(budget) if budget else 'the free memory'}"
            )
            lines = [label, *_option_lines(options, chosen, device), *_request_lines(request, candidate)]
            return Choice(candidate, chosen, estimate, tuple(lines), "preview", degraded=True)
    return None


def plan_memory(
    planner: MemoryPlanner,
    request: GenerationRequest,
    options: RunOptions = RunOptions(),
    budget: int | None = None,
    *,
    device: str = "cpu",
    weights: WeightsOf | None = None,
) -> MemoryPlan:
    """Before running: keep the request if it is predicted to fit, else the best setting of the ladder that
    does (each change a line, a switch with its time cost), else a labelled preview; ``fits=False`` when not even
    that fits."""
    estimate = _estimate(planner, request, options, weights) or 0
    if _fits(planner, request, options, budget, weights):
        return MemoryPlan(request, options, estimate, budget, True, asked=request)
    choice = choose_setting(planner, request, options, budget, device=device, weights=weights) or preview_setting(
        planner, request, options, budget, device=device, weights=weights
    )
    if choice is None:
        return MemoryPlan(
            request,
            options,
            estimate,
            budget,
            False,
            (
                f"nothing fits in {format_bytes(budget or 0)}: predicted {format_bytes(estimate)} for "
                f"the smallest setting we may choose",
            ),
            asked=request,
        )
    changes = tuple(f"planned before running: {line}" for line in choice.changes)
    return MemoryPlan(
        choice.request, choice.options, choice.estimate, budget, True, changes, choice.degraded, asked=request
    )


@dataclass(frozen=True)
class PlanOption:
    """One answer to a plan notice: what would run (``None`` for ``cancel``), how it differs from the request, and
    what it is predicted to cost — memory by the planner (``None``: unknown), seconds by the time model."""

    choice: str
    request: GenerationRequest | None
    options: RunOptions | None
    changes: tuple[str, ...]
    memory_bytes: int | None
    time_s: float | None
    fits: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "request": self.request.to_dict() if self.request else None,
            "options": asdict(self.options) if self.options else None,
            "changes": list(self.changes),
            "memory_bytes": self.memory_bytes,
            "time_s": self.time_s,
            "fits": self.fits,
        }


@dataclass(frozen=True)
class PlanNotice:
    """A request predicted not to fit, told to the user before it runs: the choices (``PLAN_CHOICES`` that apply:
    ``fewer_frames`` and ``lower_resolution`` only when such a setting is predicted to fit) and what automatic
    planning (``plan_choice=None``) would do instead (``automatic``)."""

    request: GenerationRequest
    options: RunOptions
    budget_bytes: int | None
    estimate_bytes: int | None
    message: str
    choices: tuple[PlanOption, ...]
    automatic: tuple[str, ...]

    def option(self, choice: str) -> PlanOption:
        """The option for ``choice``; ``InvalidParameterError`` naming ``plan_choice`` when it is not one of them."""
        for option in self.choices:
            if option.choice == choice:
                return option
        offered = ", ".join(option.choice for option in self.choices)
        constraint = f"must be one of {offered} for this request"
        raise InvalidParameterError(
            f"`plan_choice` {constraint} (got {choice!r:.40})",
            parameter="plan_choice",
            value=choice,
            constraint=constraint,
        )

    def plan(self, choice: str) -> MemoryPlan:
        """The plan that runs ``choice`` (not ``cancel``, which runs nothing); each change a line for the user."""
        option = self.option(choice)
        if option.request is None or option.options is None:
            raise InvalidParameterError(
                "`plan_choice` 'cancel' runs nothing (got 'cancel')",
                parameter="plan_choice",
                value=choice,
                constraint="a choice that runs",
            )
        changes: tuple[str, ...]
        if choice == "run_anyway" and option.fits:  # as asked, with a slow memory switch: the video as asked
            changes = tuple(f"planned before running (your choice: {choice}): {line}" for line in option.changes)
        elif choice == "run_anyway":
            need = format_bytes(option.memory_bytes) if option.memory_bytes else "more"
            room = format_bytes(self.budget_bytes) if self.budget_bytes else "the free memory"
            changes = (
                f"run as asked (your choice) although predicted to need {need} of {room}: an out-of-memory failure "
                "is recovered as usual",
            )
        else:
            changes = tuple(f"planned before running (your choice: {choice}): {line}" for line in option.changes)
        estimate = option.memory_bytes or 0
        return MemoryPlan(
            option.request, option.options, estimate, self.budget_bytes, option.fits, changes, asked=self.request
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.to_dict(),
            "budget_bytes": self.budget_bytes,
            "estimate_bytes": self.estimate_bytes,
            "message": self.message,
            "choices": [option.to_dict() for option in self.choices],
            "automatic": list(self.automatic),
        }


def plan_notice(
    planner: MemoryPlanner,
    request: GenerationRequest,
    options: RunOptions = RunOptions(),
    budget: int | None = None,
    *,
    device: str = "cpu",
    time_of: TimeOf | None = None,
    weights: WeightsOf | None = None,
) -> PlanNotice | None:
    """``None`` when the request runs as asked at about its speed (it fits, perhaps with a memory switch such as
    VAE tiling or group offload, which keeps the video); otherwise the notice with its choices, each with predicted
    memory and (via ``time_of``) time. When only a slow switch makes it fit (sequential offload, ≥ ``SLOW_RATIO``
    × the time), ``run_anyway`` runs it as asked with that switch — "≈10× the time, full quality" — beside the
    lower settings at their speed, and the user chooses."""
    as_asked = _fitting(planner, request, options, budget, device, weights)
    if as_asked is not None and time_ratio(options, as_asked, device) < SLOW_RATIO:
        return None
    seconds = (lambda r, o: _seconds(time_of, r, o, device)) if time_of else (lambda _request, _options: None)
    estimate = _estimate(planner, request, options, weights)
    choices: list[PlanOption] = []
    lowered = (
        ("fewer_frames", (replace(request, num_frames=f) for f in _fewer_frames(request))),
        ("lower_resolution", (replace(request, width=w, height=h) for w, h in _smaller_sizes(request))),
    )
    for name, candidates in lowered:
        for candidate in candidates:
            chosen = _fitting(planner, candidate, options, budget, device, weights)
            if chosen is not None:
                need = _estimate(planner, candidate, chosen, weights)
                lines = tuple(_fit_lines(request, options, candidate, chosen, budget, need or 0, device))
                choices.append(PlanOption(name, candidate, chosen, lines, need, seconds(candidate, chosen), True))
                break
    if as_asked is not None:  # fits, slowly: run as asked with the slow switch
        need = _estimate(planner, request, as_asked, weights)
        lines = tuple(_fit_lines(request, options, request, as_asked, budget, need or 0, device))
        choices.append(PlanOption("run_anyway", request, as_asked, lines, need, seconds(request, as_asked), True))
    else:
        choices.append(PlanOption("run_anyway", request, options, (), estimate, seconds(request, options), False))
    choices.append(PlanOption("cancel", None, None, (), None, None, True))
    automatic = plan_memory(planner, request, options, budget, device=device, weights=weights)
    words = {"fewer_frames": "fewer frames", "lower_resolution": "a lower resolution"}
    offered = [words[option.choice] for option in choices if option.choice in words]
    if as_asked is not None:
        slow = f"≈{time_ratio(options, as_asked, device):.3g}× the time"
        message = (
            f"{_described(request)} fits in {format_bytes(budget) if budget else 'the free memory'} here only "
            f"with {', '.join(_switch_words(options, as_asked))} ({slow}, full quality). Choose "
            f"{', '.join([*offered, 'to run it as asked, slower'])} or to cancel."
        )
    else:
        message = (
            f"{_described(request)} is predicted to need "
            f"{f'about {format_bytes(estimate)}' if estimate else 'more memory'}, more than "
            f"{format_bytes(budget) if budget else 'the free memory'} here. Choose "
            f"{', '.join([*offered, 'to run it as asked anyway'])} or to cancel."
        )
    return PlanNotice(request, options, budget, estimate, message, tuple(choices), automatic.changes)


def _switch_words(old: RunOptions, new: RunOptions) -> list[str]:
    return [rung_of(name).label for name in SWITCHES if getattr(new, name) and not getattr(old, name)]
