"""Automatic repair: download a missing model or re-fetch damaged files, then verify."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recovery.ports import ModelStorePort
from recovery.strategies.base import UsageLimited, changed, failed, not_applicable
from recovery.taxonomy import EnhancedFailureType, ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["AutomaticRepair"]

F = EnhancedFailureType
_DOWNLOAD = frozenset({F.MODEL_DOWNLOAD_FAILURE, F.NETWORK_CONNECTIVITY_LOSS, F.BANDWIDTH_LIMITATION})


@dataclass(frozen=True)
class AutomaticRepair(UsageLimited):
    """Ask the store to download (transfer failures) or repair (damage), ``max_uses`` times per failure type."""

    kind: ClassVar[RecoveryStrategy] = RecoveryStrategy.AUTOMATIC_REPAIR
    store: ModelStorePort | None = None

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        if self.store is None or ctx.model_id is None:
            return not_applicable(self.kind, "no model store or no model")
        if spent := self.spent(ctx):
            return spent
        verb = "downloaded" if ctx.failure_type in _DOWNLOAD else "repaired"
        done = (self.store.download if verb == "downloaded" else self.store.repair)(ctx.model_id)
        if not done or not self.store.verify(ctx.model_id):
            return failed(self.kind, f"model {ctx.model_id} could not be {verb}")
        line = f"{verb} model {ctx.model_id} and verified its files"
        return changed(self.kind, line, changes=[line])
