"""User intervention: stop, explain in plain words, say what the user can do, and notify."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recovery.messages import guidance_for
from recovery.ports import Notifier
from recovery.taxonomy import ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["UserIntervention", "intervention_result"]


def intervention_result(ctx: ErrorContext, reason: str) -> RecoveryResult:
    """The hand-over result for ``ctx``: catalogue text, steps, options and ETA; needs the user."""
    guidance = guidance_for(ctx.failure_type)
    return RecoveryResult(
        success=False,
        strategy_used=RecoveryStrategy.USER_INTERVENTION,
        recovery_time_seconds=0.0,
        message=f"handed over to the user: {reason}",
        user_message=f"{guidance.user_message} We could not fix this automatically.",
        actionable_steps=list(guidance.actionable_steps),
        alternative_options=[dict(option) for option in guidance.alternative_options],
        requires_user_action=True,
        estimated_resolution_time=guidance.estimated_resolution_time,
        follow_up_required=True,
    )


@dataclass(frozen=True)
class UserIntervention:
    """Always applicable and always last: the hand-over, sent to the notifier when there is one."""

    kind: ClassVar[RecoveryStrategy] = RecoveryStrategy.USER_INTERVENTION
    notifier: Notifier | None = None

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        return self.hand_over(ctx, f"{ctx.failure_type.value} needs the user")

    def hand_over(self, ctx: ErrorContext, reason: str) -> RecoveryResult:
        """The hand-over for ``reason`` (a limit reached, strategies exhausted), notified."""
        result = intervention_result(ctx, reason)
        if self.notifier is not None:
            self.notifier.notify(ctx, result)
        return result
