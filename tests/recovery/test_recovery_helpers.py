"""The generic helpers every part of the product shares: on/off and rate parsing, the backoff formula, /proc."""

from __future__ import annotations

import math
import os
import random

import pytest

from recovery.backoff import exponential_delay, full_jitter
from recovery.procfs import cpu_flags, meminfo, process_status, reset_peak_rss
from recovery.settings import parse_rate, parse_switch


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("on", True),
        ("ON ", True),
        ("1", True),
        ("yes", True),
        ("off", False),
        ("0", False),
        ("False", False),
        ("no", False),
    ],
)
def test_switch_words(raw: str, expected: bool) -> None:
    """Every setting reads on/off the same way, any case, spaces trimmed."""
    assert parse_switch("KINTSUGI_X", raw) is expected


def test_a_blank_switch_takes_the_default_and_nonsense_names_the_setting() -> None:
    """Unset is the default where there is one; anything else is refused naming the setting and the value."""
    assert parse_switch("KINTSUGI_X", None, default=False) is False
    with pytest.raises(ValueError, match=r"`KINTSUGI_X` must be on or off \(got 'maybe'\)"):
        parse_switch("KINTSUGI_X", "maybe")
    with pytest.raises(ValueError):
        parse_switch("KINTSUGI_X", "")


@pytest.mark.parametrize("raw", ["-0.1", "1.5", "nan", "a lot", ""])
def test_a_rate_outside_zero_to_one_is_refused(raw: str) -> None:
    """A rate is a share between 0 and 1; NaN and words fail naming the setting."""
    with pytest.raises(ValueError, match="`rate` must be a number between 0 and 1"):
        parse_rate("rate", raw)
    assert parse_rate("rate", "0.25") == 0.25 and parse_rate("rate", 1) == 1.0


def test_exponential_delay_doubles_up_to_the_cap() -> None:
    """base·factor^(n-1), capped: the store's and the engine's retries wait by the same formula."""
    assert [exponential_delay(n, 0.5, max_s=3.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert exponential_delay(3, 1.0, factor=3.0) == 9.0
    with pytest.raises(ValueError):
        exponential_delay(0, 1.0)


def test_full_jitter_spreads_over_the_whole_range() -> None:
    """Waits fall anywhere in [0, cap], the low end included."""
    rng = random.Random(3)
    waits = [full_jitter(10.0, rng) for _ in range(500)]
    assert min(waits) < 1.0 and max(waits) > 9.0 and all(0 <= w <= 10 for w in waits)


def test_procfs_reads_this_machine_and_this_process() -> None:
    """Memory of the machine and of this process come back in bytes, as the kernel reports them."""
    memory = meminfo()
    assert 0 < memory["MemAvailable"] <= memory["MemTotal"]
    status = process_status()
    assert status["VmPeak"] >= status["VmSize"] > status["VmRSS"] > 0
    assert process_status("VmSize", pid=os.getpid())["VmSize"] > 0
    assert cpu_flags() and "fpu" in cpu_flags()


def test_reset_peak_rss_brings_the_peak_down_to_now() -> None:
    """After a large allocation is freed, resetting VmHWM brings it back near the current RSS."""
    block = bytearray(200 * 2**20)
    block[::4096] = b"x" * math.ceil(len(block) / 4096)
    del block
    before = process_status("VmHWM")["VmHWM"]
    assert reset_peak_rss()
    assert process_status("VmHWM")["VmHWM"] < before
