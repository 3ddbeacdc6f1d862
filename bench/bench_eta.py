"""Benchmark of the ETA: how far the ETA shown at the start of a job is from the time it really took.

A fresh service on the built-in model (a temporary data folder) runs one 8-step warm-up, then jobs of 40 steps (and
a few other step counts and sizes); for each, the ETA of its first phase event is compared with the time from that
event to the result. Target: within 50 % on a 40-step job. Run: ``python bench/bench_eta.py [--device cpu|cuda]``.
On a CPU shared with other processes, ``OMP_NUM_THREADS=1`` keeps step times from swinging with the neighbours'
load (OpenMP's threads spin while one of them waits for a core).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from components.generation.embedded_model import build_embedded_model
from components.service import GenerationService
from components.settings import Settings

JOBS = [  # (side, frames, steps)
    (128, 17, 40),
    (128, 17, 40),
    (128, 17, 10),
    (128, 17, 80),
    (192, 17, 40),
    (128, 33, 40),
]


def run(service: GenerationService, side: int, frames: int, steps: int) -> tuple[float | None, float]:
    """(ETA at the first phase event, the real seconds from it to the result)."""
    request = {"prompt": "a lantern", "width": side, "height": side, "num_frames": frames, "steps": steps, "seed": 2}
    eta, started = None, None
    for event in service.generate(request):
        if event.kind == "phase" and started is None:
            eta, started = event.data.get("eta_s"), time.monotonic()
    assert started is not None
    return eta, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    device = parser.parse_args().device
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device=device)
        build_embedded_model(settings.embedded_model_dir)
        with GenerationService(settings) as service:
            run(service, 128, 17, 8)  # the warm-up: the time model learns from it
            print(f"{'size':>9} {'frames':>6} {'steps':>5} {'ETA s':>7} {'real s':>7} {'error':>7}")
            for side, frames, steps in JOBS:
                eta, real = run(service, side, frames, steps)
                error = "n/a" if eta is None else f"{(eta - real) / real:+.0%}"
                shown = "n/a" if eta is None else f"{eta:.2f}"
                print(f"{side:>4}×{side:<4} {frames:>6} {steps:>5} {shown:>7} {real:>7.2f} {error:>7}")


if __name__ == "__main__":
    main()
