"""Speed-ups that can fail on a machine, and the adjuster that turns a failed one off.

    switch = OptimisationSwitch()
    options, lines = switch.starting_options(RunOptions(compile=True))   # minus what already failed here
    adjustment = switch.adjust(ctx, parameters)                          # on hardware_optimization_failure

The only such switch today is ``RunOptions.compile`` (``KINTSUGI_COMPILE``): ``torch.compile`` of the
transformer, which needs a working C++ compiler on the CPU and Triton on CUDA. When it fails the video is still
made — the same video, without the speed-up — and the switch stays off for the rest of this process, so later
requests do not pay for the failed compile again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from components.generation.request import RunOptions, join_parameters, split_parameters
from recovery.classify import error_chain
from recovery.errors import HardwareOptimizationError
from recovery.ports import Adjustment
from recovery.taxonomy import EnhancedFailureType, ErrorContext

__all__ = ["OPTIMISATIONS", "OptimisationSwitch"]

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
