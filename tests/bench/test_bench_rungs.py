"""The rung bench's CUDA mode runs everywhere: without a CUDA device it says so and exits 0 (this machine has none)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_cuda_device_the_cuda_mode_says_nothing_to_measure(capsys: pytest.CaptureFixture[str]) -> None:
    """``--cuda`` without a device prints one line and exits 0 (CI and CPU machines)."""
    import torch

    if torch.cuda.is_available():  # pragma: no cover - a GPU machine measures instead
        pytest.skip("a CUDA device is present: bench/bench_rungs.py --cuda measures here")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_rungs
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert bench_rungs.main(["--cuda"]) == 0
    assert capsys.readouterr().out.strip() == "no CUDA device: nothing to measure"
