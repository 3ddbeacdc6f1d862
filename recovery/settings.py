"""Process-wide switches, the engine limits read from ``KINTSUGI_*`` environment variables, and the parsers every
setting of the product uses for on/off switches and rates (so that no two places read ``on`` differently)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

__all__ = ["EngineLimits", "is_testing", "parse_rate", "parse_switch", "set_testing"]

_testing = False
_ON = frozenset({"1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})


def parse_switch(name: str, raw: str | None, *, default: bool | None = None) -> bool:
    """``on``/``off`` (also 1/0, true/false, yes/no, any case) as a bool; unset or blank gives ``default`` when
    there is one. Anything else raises ``ValueError`` naming the setting and the value."""
    text = (raw or "").strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    if not text and default is not None:
        return default
    raise ValueError(f"`{name}` must be on or off (got {raw!r})")


def parse_rate(name: str, raw: str | float) -> float:
    """A share between 0 and 1 (``"0.25"`` → 0.25); anything else, NaN included, raises ``ValueError`` naming the
    setting and the value."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"`{name}` must be a number between 0 and 1 (got {raw!r})")
    return value


class _Testing:
    """What ``set_testing`` returns: the switch is already set; leaving a ``with`` block restores the value it
    had before."""

    def __init__(self, previous: bool) -> None:
        self.previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        global _testing
        _testing = self.previous


def set_testing(testing: bool = True) -> _Testing:
    """Turn backoff waits off (``True``) or back on, for tests and notebooks that must be fast. Takes effect at
    once; used as ``with set_testing(True): ...`` the previous value comes back at the end of the block."""
    global _testing
    previous, _testing = _testing, testing
    return _Testing(previous)


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
            raise ValueError(f"`user_intervention_threshold` must be >= 1 (got {self.user_intervention_threshold})")

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
