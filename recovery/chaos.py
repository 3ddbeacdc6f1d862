"""Fault injection: decide, at a set rate and only when switched on, whether a named fault is injected.

    policy = ChaosPolicy(rate=0.2, enabled=True, rng=random.Random(7))
    policy.register("vram_exhaustion", inject_oom)
    if policy.should_inject("vram_exhaustion"):
        policy.injector("vram_exhaustion")(...)

Generic (no ``components``, ``gradio`` or ``diffusers``): what an injector does is the caller's business;
``components.chaos`` registers one per failure type that produces the failure for real. Off by default; the
environment switch ``KINTSUGI_CHAOS=on`` turns it on (``ChaosPolicy.from_env``). Randomness is injected.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recovery.settings import parse_rate, parse_switch

__all__ = ["CHAOS_ENV", "ChaosPolicy", "ChaosSwitch", "Injector"]

CHAOS_ENV = "KINTSUGI_CHAOS"

Injector = Callable[..., Any]


@dataclass
class ChaosSwitch:
    """The enable switch: off unless turned on (by code or ``KINTSUGI_CHAOS=on``)."""

    enabled: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ChaosSwitch:
        return cls(parse_switch(CHAOS_ENV, (os.environ if environ is None else environ).get(CHAOS_ENV), default=False))

    def on(self) -> None:
        self.enabled = True

    def off(self) -> None:
        self.enabled = False


@dataclass
class ChaosPolicy:
    """An injection ``rate`` in 0..1, an enable switch, a random generator and a registry of named injectors."""

    rate: float = 0.0
    switch: ChaosSwitch = field(default_factory=ChaosSwitch)
    rng: random.Random = field(default_factory=random.Random)
    injectors: dict[str, Injector] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rate = parse_rate("rate", self.rate)

    @classmethod
    def from_env(
        cls, rate: float = 0.0, *, environ: Mapping[str, str] | None = None, rng: random.Random | None = None
    ) -> ChaosPolicy:
        """A policy whose switch follows ``KINTSUGI_CHAOS``."""
        return cls(rate, ChaosSwitch.from_env(environ), rng or random.Random())

    @property
    def enabled(self) -> bool:
        return self.switch.enabled

    def register(self, name: str, injector: Injector) -> None:
        """Add ``injector`` under ``name``; a name is registered once."""
        if not name:
            raise ValueError("`name` must be a non-empty string (got '')")
        if name in self.injectors:
            raise ValueError(f"`name` is already registered (got {name!r})")
        self.injectors[name] = injector

    def injector(self, name: str) -> Injector:
        try:
            return self.injectors[name]
        except KeyError:
            raise KeyError(f"no injector named {name!r}; registered: {', '.join(sorted(self.injectors))}") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.injectors)

    def should_inject(self, name: str) -> bool:
        """True when the switch is on, ``name`` is registered and the draw falls under ``rate``."""
        if not self.switch.enabled or name not in self.injectors:
            return False
        return self.rng.random() < self.rate
