"""Parameter adjustment: make the request fit (smaller, valid) through the ``ParameterAdjuster`` port."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from recovery.ports import Adjustment, ParameterAdjuster
from recovery.strategies.base import failed, from_adjustment, not_applicable
from recovery.taxonomy import ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["FirstAdjuster", "ParameterAdjustment"]


@dataclass(frozen=True)
class ParameterAdjustment:
    """Run again with the adjuster's parameters; fails when the adjuster finds nothing that fits."""

    kind: ClassVar[RecoveryStrategy] = RecoveryStrategy.PARAMETER_ADJUSTMENT
    adjuster: ParameterAdjuster | None = None

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        if self.adjuster is None:
            return not_applicable(self.kind, "no parameter adjuster")
        adjustment = self.adjuster.adjust(ctx, ctx.user_parameters)
        if adjustment is None or dict(adjustment.parameters) == ctx.user_parameters:
            return failed(self.kind, "no smaller or valid settings left to try")
        return from_adjustment(self.kind, adjustment)


@dataclass(frozen=True)
class FirstAdjuster:
    """A ``ParameterAdjuster`` made of several, each for its own failures: the first with an answer wins."""

    adjusters: tuple[ParameterAdjuster, ...]

    def adjust(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        for adjuster in self.adjusters:
            adjustment = adjuster.adjust(ctx, parameters)
            if adjustment is not None:
                return adjustment
        return None
