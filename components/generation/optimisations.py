"""Speed-ups that can fail on a machine, the adjuster that turns a failed one off, and the memory switches of the
GPU ladder applied to a loaded pipeline (``MemorySwitches``).

    switch = OptimisationSwitch()
    options, lines = switch.starting_options(RunOptions(compile=True))   # minus what already failed here
    adjustment = switch.adjust(ctx, parameters)                          # on hardware_optimization_failure

The only such switch today is ``RunOptions.compile`` (``KINTSUGI_COMPILE``): ``torch.compile`` of the
transformer, which needs a working C++ compiler on the CPU and Triton on CUDA. When it fails the video is still
made — the same video, without the speed-up — and the switch stays off for the rest of this process, so later
requests do not pay for the failed compile again.

``MemorySwitches.apply(pipe, options, device)`` turns on the ladder's switches that diffusers keeps as hooks on the
pipeline: group offload (block level, one block per group, the next prefetched on a CUDA stream), layerwise casting
(the transformer stored in ``float8_e4m3fn``, computed in its dtype; it runs on the CPU too) and sequential offload.
A CUDA-only switch on the CPU is refused, named, before anything changes. The hooks cannot be taken off again, so a
pipeline that carries one a request does not want is reloaded (``needs_reload``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from components.generation.request import RunOptions, join_parameters, split_parameters
from recovery.classify import error_chain
from recovery.errors import HardwareOptimizationError, UnsupportedOperationError
from recovery.ports import Adjustment
from recovery.taxonomy import EnhancedFailureType, ErrorContext

__all__ = [
    "CUDA_ONLY",
    "HOOKED_SWITCHES",
    "OPTIMISATIONS",
    "MemorySwitches",
    "OptimisationSwitch",
    "enable_group_offload",
    "enable_layerwise_casting",
    "enable_sequential_offload",
    "parameter_bytes",
]

#: RunOptions fields that only change speed, with the words the user reads for each.
OPTIMISATIONS: Mapping[str, str] = {"compile": "torch.compile"}


@dataclass
class OptimisationSwitch:
    """``recovery.ports.ParameterAdjuster`` for ``hardware_optimization_failure``: the failed speed-up off."""

    failed: dict[str, str] = field(default_factory=dict)  # option name → why it failed here
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def adjust(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        if ctx.failure_type is not EnhancedFailureType.HARDWARE_OPTIMIZATION_FAILURE:
            return None
        request, options = split_parameters(parameters)
        error = next((e for e in error_chain(ctx.original_error) if isinstance(e, HardwareOptimizationError)), None)
        named = error.optimization if error is not None else None
        # The error names the one that failed; without a name, every speed-up that is on is suspect.
        names: list[str] = [named] if named is not None and named in OPTIMISATIONS else list(OPTIMISATIONS)
        names = [name for name in names if getattr(options, name)]
        if not names:
            return None
        reason = str(error.reason or "it failed") if error is not None else "it failed"
        with self._lock:
            self.failed.update({name: reason for name in names})
        lines = tuple(
            f"{OPTIMISATIONS[name]} turned off: {reason} on this machine — the same video, without the speed-up"
            for name in names
        )
        return Adjustment(
            join_parameters(request, replace(options, **{name: False for name in names})),
            lines,
            f"{' and '.join(OPTIMISATIONS[name] for name in names)} off",
        )

    def starting_options(self, wanted: RunOptions) -> tuple[RunOptions, list[str]]:
        """``wanted`` without the speed-ups that already failed in this process, and a line for each left off."""
        with self._lock:
            off = {name: reason for name, reason in self.failed.items() if getattr(wanted, name)}
        lines = [
            f"{OPTIMISATIONS[name]} left off: it failed on this machine earlier ({reason})"
            for name, reason in off.items()
        ]
        return replace(wanted, **{name: False for name in off}), lines


#: The memory switches diffusers keeps as hooks on the pipeline (tiling and model offload are the generator's own).
HOOKED_SWITCHES = ("group_offload", "layerwise_casting", "sequential_offload")
#: Switches that need a CUDA device: they move weights between the GPU and host memory.
CUDA_ONLY = frozenset({"model_cpu_offload", "group_offload", "sequential_offload"})
_OFFLOADS = ("model_cpu_offload", "group_offload", "sequential_offload")
_TRANSFORMERS = ("transformer", "transformer_2")  # Wan 2.2 A14B: two experts


def parameter_bytes(module: Any) -> int:
    """Bytes of a module's parameters as stored (what layerwise casting lowers)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def enable_group_offload(pipe: Any, onload_device: str, *, use_stream: bool = True) -> None:
    """Block-level group offload of every component: one block per group on ``onload_device`` while it runs, the
    rest in host memory; with ``use_stream`` the next block is copied on a CUDA stream while this one computes."""
    import torch

    pipe.to("cpu")  # the groups start in host memory: each is onloaded when its forward runs
    pipe.enable_group_offload(
        onload_device=torch.device(onload_device),
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=use_stream,
    )


def enable_layerwise_casting(pipe: Any) -> list[str]:
    """Store the transformer(s) in ``float8_e4m3fn`` and compute in their current dtype; diffusers keeps the
    precision-critical layers (embeddings, norms) as they are. Returns the components cast."""
    import torch

    cast = []
    for name in _TRANSFORMERS:
        module = getattr(pipe, name, None)
        if module is None:
            continue
        if not hasattr(module, "enable_layerwise_casting"):
            raise UnsupportedOperationError(
                f"`layerwise_casting` is not supported by this model's {name} (got {type(module).__name__})",
                operation="layerwise_casting",
                reason=type(module).__name__,
            )
        module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=module.dtype)
        cast.append(name)
    return cast


def enable_sequential_offload(pipe: Any, device: str) -> None:
    """Every leaf module on ``device`` only while it runs (accelerate's hooks): the least memory, the slowest."""
    pipe.enable_sequential_cpu_offload(device=device)


@dataclass
class MemorySwitches:
    """The hooked switches applied to one loaded pipeline (a fresh instance per load)."""

    applied: set[str] = field(default_factory=set)

    def needs_reload(self, options: RunOptions, *, model_offloaded: bool = False) -> bool:
        """Whether the pipeline carries a hook ``options`` do not want, or an offload other than the one they ask
        for (diffusers cannot stack offload hooks): then only a fresh load gives the plain pipeline back."""
        wanted = {name for name in HOOKED_SWITCHES if getattr(options, name)}
        if self.applied - wanted:
            return True
        other_offload = options.group_offload or options.sequential_offload
        return model_offloaded and other_offload

    @staticmethod
    def places_weights(options: RunOptions) -> bool:
        """Whether ``options`` ask for an offload whose hooks place the weights (then a fresh load leaves the
        pipeline in host memory instead of moving it onto the device whole, which may not fit)."""
        return options.group_offload or options.sequential_offload

    @staticmethod
    def check(options: RunOptions, device: str) -> None:
        """Refuse, named, a CUDA-only switch on another device, or two offloads at once."""
        offloads = [name for name in _OFFLOADS if getattr(options, name)]
        if len(offloads) > 1:
            raise UnsupportedOperationError(
                f"`options` may turn on one offload at a time (got {', '.join(offloads)})",
                operation="+".join(offloads),
                reason="one offload at a time",
            )
        for name in HOOKED_SWITCHES:
            if getattr(options, name) and name in CUDA_ONLY and device != "cuda":
                raise UnsupportedOperationError(
                    f"`{name}` needs a CUDA device (got device {device!r})", operation=name, reason=device
                )

    def apply(self, pipe: Any, options: RunOptions, device: str) -> None:
        """Turn on the hooked switches ``options`` ask for and the pipeline does not carry yet (``check`` first:
        nothing changes when it refuses). Called on a fresh load before the pipeline is placed, the cast happens in
        host memory and only fp8 weights reach the device."""
        self.check(options, device)
        wanted = [name for name in HOOKED_SWITCHES if getattr(options, name)]
        # The cast first: the offload hooks then move the fp8 weights, half the bytes.
        if "layerwise_casting" in wanted and "layerwise_casting" not in self.applied:
            enable_layerwise_casting(pipe)
            self.applied.add("layerwise_casting")
        if "group_offload" in wanted and "group_offload" not in self.applied:
            enable_group_offload(pipe, device)
            self.applied.add("group_offload")
        if "sequential_offload" in wanted and "sequential_offload" not in self.applied:
            enable_sequential_offload(pipe, device)
            self.applied.add("sequential_offload")
