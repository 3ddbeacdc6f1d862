"""The prior bench's fit: peaks made by known coefficients are fitted back (no run needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_fit_reproduces_peaks_made_by_known_coefficients(tiny_model: Path) -> None:
    """Phase peaks computed from the shipped coefficients over a grid are predicted back within 2 % by the
    coefficients the bench fits to them — load and decode (the run's whole need); the activation term comes from a
    real transformer's resident growth, which a tiny model's peaks do not show."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_prior
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from components.memory.calibration import prior_coefficients
    from components.memory.prior import read_prior

    truth, prior = prior_coefficients("cpu"), read_prior(tiny_model)
    assert prior is not None
    items = []
    for frames, side in ((9, 128), (9, 256), (17, 256), (9, 384), (9, 512), (33, 512)):
        phases = prior.predict(frames, side, side, truth)
        items.append(
            dict(model_id="m", num_frames=frames, width=side, height=side, vae_tiling=False, guidance=5.0, peak=phases)
        )
    fitted = bench_prior.fit(items, {"m": tiny_model})
    for item in items:
        again = bench_prior.predicted(item, prior, fitted)
        for phase in ("load", "decode"):
            assert again[phase] == pytest.approx(item["peak"][phase], rel=0.02), (item["num_frames"], phase)
