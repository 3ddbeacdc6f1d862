"""Intelligent fallback: run the request on another model that the store says can stand in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recovery.ports import ModelStorePort
from recovery.strategies.base import changed, failed, not_applicable
from recovery.taxonomy import ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["IntelligentFallback"]


@dataclass(frozen=True)
class IntelligentFallback:
    """Switch to the best candidate not tried yet for this request (``system_state["tried_models"]``) — only with
    the caller's consent: ``system_state["fallback_allowed"] is False`` (``run(allow_fallback=False)``) makes it
    not applicable, naming the model it would have used, so the request ends with its own model's message."""

    kind: ClassVar[RecoveryStrategy] = RecoveryStrategy.INTELLIGENT_FALLBACK
    store: ModelStorePort | None = None

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        if self.store is None:
            return not_applicable(self.kind, "no model store")
        if ctx.model_id is None:
            return not_applicable(self.kind, "the request names no model")
        tried = set(ctx.system_state.get("tried_models", ())) | {ctx.model_id}
        fresh = [candidate for candidate in self.store.fallback_candidates(ctx.model_id) if candidate not in tried]
        if ctx.system_state.get("fallback_allowed") is False:
            withheld = f"another model ({fresh[0]})" if fresh else "another model"
            return not_applicable(self.kind, f"{withheld} was not allowed for this request")
        if not fresh:
            return failed(self.kind, f"no untried alternative to {ctx.model_id}")
        line = f"model {ctx.model_id} → {fresh[0]} ({ctx.failure_type.value})"
        return changed(self.kind, line, changes=[line], model_id=fresh[0], degraded=True)
