"""Process-wide switches and the engine limits read from ``KINTSUGI_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["EngineLimits", "set_testing", "is_testing"]

_testing = False


def set_testing(testing: bool = True) -> None:
    """Turn backoff waits off (``True``) or back on, for tests and notebooks that must be fast."""
    global _testing
    _testing = testing


def is_testing() -> bool:
    """Whether ``set_testing(True)`` is in effect."""
    return _testing


@dataclass(frozen=True)
class EngineLimits:
    """The three limits of ``EnhancedErrorRecovery``, with the spec's defaults."""

    max_recovery_attempts: int = 5
    recovery_timeout_seconds: float = 300.0
    user_intervention_threshold: int = 3

    def __post_init__(self) -> None:
        if self.max_recovery_attempts < 1:
            raise ValueError(f"`max_recovery_attempts` must be >= 1 (got {self.max_recovery_attempts})")
        if self.recovery_timeout_seconds <= 0:
            raise ValueError(f"`recovery_timeout_seconds` must be > 0 (got {self.recovery_timeout_seconds})")
        if self.user_intervention_threshold < 1:
            raise ValueError(
                f"`user_intervention_threshold` must be >= 1 (got {self.user_intervention_threshold})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineLimits:
        """Read ``KINTSUGI_MAX_RECOVERY_ATTEMPTS``, ``KINTSUGI_RECOVERY_TIMEOUT_S`` and
        ``KINTSUGI_USER_INTERVENTION_THRESHOLD``; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            max_recovery_attempts=int(env.get("KINTSUGI_MAX_RECOVERY_ATTEMPTS", default.max_recovery_attempts)),
            recovery_timeout_seconds=float(env.get("KINTSUGI_RECOVERY_TIMEOUT_S", default.recovery_timeout_seconds)),
            user_intervention_threshold=int(
                env.get("KINTSUGI_USER_INTERVENTION_THRESHOLD", default.user_intervention_threshold)
            ),
        )
