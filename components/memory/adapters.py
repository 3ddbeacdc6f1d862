"""The memory sub-system behind the recovery engine's ports: ``MemoryLadder`` (``ParameterAdjuster``: climb the
ladder of ``components.memory.ladder`` after an out-of-memory), ``PreviewDegrader`` (``Degrader``: a labelled
preview when nothing fits) and ``WorkerMemoryFreer`` (``ResourceFreer``: restart the worker when memory stayed
held, or after it crashed)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.request import GenerationRequest, RunOptions, join_parameters, split_parameters
from components.memory.ladder import Choice, choose_setting, preview_setting, smaller_model_setting
from components.memory.planner import MemoryPlanner
from components.memory.rungs import WeightsOf
from recovery.classify import error_chain
from recovery.errors import OutOfMemoryError, WorkerCrashedError
from recovery.messages import format_bytes
from recovery.ports import Adjustment
from recovery.taxonomy import EnhancedFailureType, ErrorContext

__all__ = ["MemoryLadder", "PreviewDegrader", "WorkerMemoryFreer"]


def _out_of_memory(ctx: ErrorContext) -> OutOfMemoryError | None:
    return next((link for link in error_chain(ctx.original_error) if isinstance(link, OutOfMemoryError)), None)


def _budget(
    ctx: ErrorContext, default: int | None, planner: MemoryPlanner, request: GenerationRequest, options: RunOptions
) -> int | None:
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

    ``budget``: the worker's memory cap when the error does not carry one. ``smaller``: the catalogue's smaller
    sibling of a model (``IntelligentFallbackManager.smaller_model``), the last rung once no lower setting fits —
    taken only when the failure says the user allowed another model (``system_state["fallback_allowed"] is
    True``, the engine's ``run(allow_fallback=...)``); it switches the model as a fallback does.
    """

    planner: MemoryPlanner
    budget: int | None = None
    device: str = "cpu"
    freer: WorkerMemoryFreer | None = None  # rung 0: restart the worker when memory stayed held
    min_frames_share: float = 0.25
    min_side_share: float = 0.5
    restart_after_oom: bool = True  # measured here: a worker after an OOM failed runs a fresh one completed
    smaller: Callable[[str], str | None] | None = None
    weights: WeightsOf | None = None  # a model's weight bytes per component: predicts the offload/casting rungs
    #: The first setting this ladder saw per request (correlation id): the smaller model starts from it again.
    _asked: OrderedDict[str, GenerationRequest] = field(default_factory=OrderedDict, init=False, repr=False)

    def adjust(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        if ctx.failure_type is not EnhancedFailureType.VRAM_EXHAUSTION:
            return None
        request, options = split_parameters(parameters)
        asked = self._first_setting(ctx.correlation_id, request)
        budget = _budget(ctx, self.budget, self.planner, request, options)
        # A request predicted to fit that still ran out points at memory the worker held, not at its size: then the
        # restart below (which loses the kept latents) is the remedy, not a decode of the same latents in the same
        # worker.
        predicted_to_fit = budget is not None and self.planner.fits(request, options, budget)
        self.planner.record(request, options, None, False, memory_cap=budget)  # learn before choosing
        error = _out_of_memory(ctx)
        decode_retry = bool(
            error is not None
            and error.data.get("phase") == "decode"
            and error.data.get("latents_kept")
            and not predicted_to_fit
        )
        choice = choose_setting(
            self.planner,
            request,
            options,
            budget,
            device=self.device,
            decode_retry=decode_retry,
            min_frames_share=self.min_frames_share,
            min_side_share=self.min_side_share,
            weights=self.weights,
        )
        if choice is None:
            choice = self._smaller_model(ctx, asked, request, options, budget)
        if choice is None:
            return None
        freed: list[str] = []
        reuses_latents = decode_retry and choice.request == request  # a restart would lose the kept latents
        if self.freer is not None and not reuses_latents:
            freed = self.freer.make_room(choice.request.model_id, force=self.restart_after_oom)
        switched = choice.request.model_id if choice.request.model_id != request.model_id else None
        return Adjustment(
            join_parameters(choice.request, choice.options), (*freed, *choice.changes), choice.rung, switched
        )

    def _first_setting(self, correlation_id: str | None, request: GenerationRequest) -> GenerationRequest:
        if correlation_id is None:
            return request
        asked = self._asked.setdefault(correlation_id, request)
        self._asked.move_to_end(correlation_id)
        while len(self._asked) > 256:
            self._asked.popitem(last=False)
        return asked

    def _smaller_model(
        self,
        ctx: ErrorContext,
        asked: GenerationRequest,
        request: GenerationRequest,
        options: RunOptions,
        budget: int | None,
    ) -> Choice | None:
        """The smaller sibling's rung: only with consent, never a model this request already tried."""
        if self.smaller is None or ctx.system_state.get("fallback_allowed") is not True:
            return None
        sibling = self.smaller(request.model_id)
        if sibling is None or sibling in set(ctx.system_state.get("tried_models", ())) | {request.model_id}:
            return None
        return smaller_model_setting(
            self.planner,
            asked,
            request,
            options,
            budget,
            sibling,
            device=self.device,
            min_frames_share=self.min_frames_share,
            min_side_share=self.min_side_share,
            weights=self.weights,
        )


@dataclass
class PreviewDegrader:
    """``recovery.ports.Degrader``: when nothing fits at the requested quality, a labelled preview."""

    planner: MemoryPlanner
    budget: int | None = None
    device: str = "cpu"
    max_frames: int = 9
    weights: WeightsOf | None = None

    def degrade(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        if ctx.failure_type is not EnhancedFailureType.VRAM_EXHAUSTION:
            return None
        request, options = split_parameters(parameters)
        budget = _budget(ctx, self.budget, self.planner, request, options)
        choice = preview_setting(
            self.planner, request, options, budget, device=self.device, max_frames=self.max_frames, weights=self.weights
        )
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
    model_id: str = EMBEDDED_MODEL_ID

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
        return [
            f"worker restarted: it still held {format_bytes(held[0])} of its {format_bytes(held[1])} after the failure"
        ]

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
