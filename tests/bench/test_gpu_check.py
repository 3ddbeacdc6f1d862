"""The prepared CUDA check runs everywhere: without a CUDA device it says so and exits 0 (this machine has none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_cuda_device_it_says_nothing_to_check_and_exits_0() -> None:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - a GPU machine runs the real check instead
        pytest.skip("a CUDA device is present: bench/gpu_check.py runs the real check here")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--write-docs"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no CUDA device: nothing to check"


def test_the_report_lists_every_run_with_prediction_and_measured_peak() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    rows = [
        {
            "card_gib": 8.0,
            "planning": True,
            "predicted": 7 * 2**30,
            "measured_peak": 6 * 2**30,
            "ok": True,
            "first_try_fit": True,
            "attempts": 1,
            "oom_rescued": False,
            "made": "81×480×832",
            "changes": [],
            "seconds": 61.0,
        },
        {
            "card_gib": 8.0,
            "planning": False,
            "predicted": None,
            "ok": False,
            "error": "OutOfMemoryError: x",
            "seconds": 12.0,
        },
    ]
    text = gpu_check.report(rows, [], ["- device: test"], gpu_check.argparse.Namespace(frames=81, steps=4))
    assert "| 8 GiB | on | 7.00 GiB | 6.00 GiB | True | 1 | False | 81×480×832 |" in text
    assert "| 8 GiB | off | — | — | — | — | — | OutOfMemoryError: x |" in text
    assert "First-try fit with planning on: 1/1." in text
