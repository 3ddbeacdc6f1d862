"""Resource optimisation: free memory, or restart the worker when the process itself is in trouble."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recovery.ports import ResourceFreer
from recovery.strategies.base import UsageLimited, changed, failed, not_applicable
from recovery.taxonomy import EnhancedFailureType, ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["ResourceOptimization"]

F = EnhancedFailureType
_RESTART = frozenset({F.SYSTEM_RESOURCE_ERROR, F.MODEL_LOADING_TIMEOUT})


@dataclass(frozen=True)
class ResourceOptimization(UsageLimited):
    """Restart the worker for crashes and hung loads, else free memory; ``max_uses`` times per failure type."""

    kind: ClassVar[RecoveryStrategy] = RecoveryStrategy.RESOURCE_OPTIMIZATION
    freer: ResourceFreer | None = None

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        if self.freer is None:
            return not_applicable(self.kind, "no resource freer")
        if spent := self.spent(ctx):
            return spent
        act = self.freer.restart_worker if ctx.failure_type in _RESTART else self.freer.free_memory
        lines = list(act(ctx))
        if not lines:
            return failed(self.kind, "nothing could be freed")
        return changed(self.kind, "; ".join(lines), changes=lines)
