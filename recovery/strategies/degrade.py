"""Graceful degradation: give the user a labelled, lower-quality result rather than none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recovery.ports import Degrader
from recovery.strategies.base import UsageLimited, failed, from_adjustment, not_applicable
from recovery.taxonomy import ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["GracefulDegradation"]


@dataclass(frozen=True)
class GracefulDegradation(UsageLimited):
    """Run again with the degrader's variant, once per failure type; the outcome is marked degraded."""

    kind: ClassVar[RecoveryStrategy] = RecoveryStrategy.GRACEFUL_DEGRADATION
    degrader: Degrader | None = None

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        if self.degrader is None:
            return not_applicable(self.kind, "no degrader")
        if spent := self.spent(ctx):
            return spent
        variant = self.degrader.degrade(ctx, ctx.user_parameters)
        if variant is None:
            return failed(self.kind, "no degraded variant available")
        return from_adjustment(self.kind, variant, degraded=True)
