"""Exponential backoff, one formula for every retry of the product: the recovery engine's ``immediate_retry``
(with full jitter) and the model store's transfers (with the server's ``Retry-After`` when it gives one)."""

from __future__ import annotations

import random

__all__ = ["exponential_delay", "full_jitter"]


def exponential_delay(retry: int, base_s: float, *, factor: float = 2.0, max_s: float = float("inf")) -> float:
    """Seconds before retry number ``retry`` (1 = the first): ``base_s × factor^(retry-1)``, at most ``max_s``."""
    if retry < 1:
        raise ValueError(f"`retry` must be >= 1 (got {retry})")
    return min(max_s, base_s * factor ** (retry - 1))


def full_jitter(cap_s: float, rng: random.Random) -> float:
    """A wait drawn uniformly between 0 and ``cap_s`` (AWS's "full jitter": retries of many clients spread out)."""
    return rng.uniform(0.0, cap_s)
