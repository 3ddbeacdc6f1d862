"""What every strategy shares: the one-method Protocol and the three ways a strategy can answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from recovery.taxonomy import ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["Strategy", "UsageLimited", "not_applicable", "failed", "changed", "attempts_of", "from_adjustment"]


@runtime_checkable
class Strategy(Protocol):
    """One way to recover: one frozen context in, one result out."""

    kind: ClassVar[RecoveryStrategy]

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        """Try to recover from ``ctx``; ``success`` means "run the request again with ``system_changes``"."""
        ...


def not_applicable(kind: RecoveryStrategy, reason: str) -> RecoveryResult:
    """This strategy cannot act here (no port, no budget, not retryable): skip it, fast."""
    return RecoveryResult(
        False, kind, 0.0, f"{kind.value} not applicable: {reason}", system_changes={"applicable": False}
    )


def failed(kind: RecoveryStrategy, message: str) -> RecoveryResult:
    """The strategy acted and did not help."""
    return RecoveryResult(False, kind, 0.0, message)


def changed(
    kind: RecoveryStrategy,
    message: str,
    *,
    changes: Sequence[str] = (),
    parameters: Mapping[str, Any] | None = None,
    model_id: str | None = None,
    degraded: bool = False,
) -> RecoveryResult:
    """The strategy recovered; ``system_changes`` tells the engine what to run next."""
    system_changes: dict[str, Any] = {"changes": list(changes)}
    if parameters is not None:
        system_changes["parameters"] = dict(parameters)
    if model_id is not None:
        system_changes["model_id"] = model_id
    if degraded:
        system_changes["degraded"] = True
    return RecoveryResult(True, kind, 0.0, message, system_changes=system_changes)


def attempts_of(ctx: ErrorContext, kind: RecoveryStrategy) -> int:
    """How often ``kind`` already ran for this failure type of this request (``previous_attempts`` holds
    ``"failure_type:strategy"`` entries)."""
    return ctx.previous_attempts.count(f"{ctx.failure_type.value}:{kind.value}")


def from_adjustment(kind: RecoveryStrategy, adjustment: Any, *, degraded: bool = False) -> RecoveryResult:
    """A ``changed`` result from a port's ``Adjustment`` (new parameters plus change lines). An adjustment that
    names another model switches to it and, like a fallback, is marked degraded (a stand-in for the model asked)."""
    changes = list(adjustment.changes)
    label = getattr(adjustment, "label", "")
    model_id = getattr(adjustment, "model_id", None)
    message = f"{kind.value}: " + ("; ".join(changes) or label or "parameters changed")
    return changed(
        kind,
        message,
        changes=changes,
        parameters=adjustment.parameters,
        model_id=model_id,
        degraded=degraded or model_id is not None,
    )


@dataclass(frozen=True)
class UsageLimited:
    """Base for strategies that may act at most ``max_uses`` times per failure type of one request."""

    kind: ClassVar[RecoveryStrategy]
    max_uses: int = 1

    def __post_init__(self) -> None:
        if self.max_uses < 1:
            raise ValueError(f"`max_uses` must be >= 1 (got {self.max_uses})")

    def spent(self, ctx: ErrorContext) -> RecoveryResult | None:
        """A not-applicable result once the uses are spent, else ``None``."""
        if attempts_of(ctx, self.kind) >= self.max_uses:
            return not_applicable(self.kind, f"already used {self.max_uses} time(s) for this failure")
        return None
