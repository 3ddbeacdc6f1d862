"""The chaos policy: off by default, the env switch, the rate against an injected random generator, the registry."""

from __future__ import annotations

import random

import pytest

from recovery.chaos import ChaosPolicy, ChaosSwitch


def _policy(rate: float, *, enabled: bool = True, seed: int = 3) -> ChaosPolicy:
    policy = ChaosPolicy(rate, ChaosSwitch(enabled), random.Random(seed))
    policy.register("vram_exhaustion", lambda: None)
    return policy


def test_off_by_default() -> None:
    """A new policy injects nothing, even at rate 1."""
    policy = ChaosPolicy(1.0)
    policy.register("vram_exhaustion", lambda: None)
    assert not policy.should_inject("vram_exhaustion")


@pytest.mark.parametrize(("raw", "enabled"), [("on", True), ("1", True), ("off", False), ("", False)])
def test_env_switch(raw: str, enabled: bool) -> None:
    """``KINTSUGI_CHAOS`` turns the switch on or leaves it off."""
    assert ChaosPolicy.from_env(1.0, environ={"KINTSUGI_CHAOS": raw}).enabled is enabled


def test_env_switch_rejects_other_values() -> None:
    """A value that is neither on nor off is an error naming the variable."""
    with pytest.raises(ValueError, match="KINTSUGI_CHAOS"):
        ChaosSwitch.from_env({"KINTSUGI_CHAOS": "maybe"})


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 1000)])
def test_rate_bounds(rate: float, expected: int) -> None:
    """Rate 0 never injects, rate 1 always does."""
    policy = _policy(rate)
    assert sum(policy.should_inject("vram_exhaustion") for _ in range(1000)) == expected


def test_rate_follows_the_injected_generator() -> None:
    """The same seed gives the same decisions, and about ``rate`` of them inject."""
    a, b = _policy(0.3, seed=11), _policy(0.3, seed=11)
    draws_a = [a.should_inject("vram_exhaustion") for _ in range(2000)]
    draws_b = [b.should_inject("vram_exhaustion") for _ in range(2000)]
    assert draws_a == draws_b
    assert 0.25 < sum(draws_a) / 2000 < 0.35


def test_unregistered_name_never_injects() -> None:
    """Only registered injectors can fire."""
    assert not _policy(1.0).should_inject("permission_denied")


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_out_of_range_is_rejected(rate: float) -> None:
    """The rate must lie in 0..1 and the error names it."""
    with pytest.raises(ValueError, match="`rate`"):
        ChaosPolicy(rate)


def test_registry_rejects_duplicates_and_names_unknowns() -> None:
    """A name registers once; asking for an unknown one lists the known ones."""
    policy = _policy(0.5)
    with pytest.raises(ValueError, match="already registered"):
        policy.register("vram_exhaustion", lambda: None)
    with pytest.raises(KeyError, match="vram_exhaustion"):
        policy.injector("nope")
    assert policy.names == ("vram_exhaustion",)


def test_recovery_chaos_imports_nothing_of_the_domain() -> None:
    """``recovery.chaos`` stays generic: no components, gradio or diffusers import."""
    import recovery.chaos as module

    source = open(module.__file__).read()
    assert not any(
        f"import {name}" in source or f"from {name}" in source for name in ("components", "gradio", "diffusers")
    )
