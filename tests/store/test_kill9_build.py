"""kill -9 during the embedded tiny model's build: the folder under its name is the old build or none, never half
of one; a build killed midway leaves only hidden partials, which the next build removes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.chaos.store_kills import KillRunner
from components.generation.embedded_model import EMBEDDED_MODEL_ID, verify_manifest

KILLS = 6


@pytest.fixture(scope="module")
def builder() -> Iterator[KillRunner]:
    with KillRunner(warm=("build",)) as kill_runner:
        yield kill_runner


def test_build_killed_at_random_points_leaves_the_old_model_or_none(builder: KillRunner, tmp_path: Path) -> None:
    """Six builds over an existing one killed at random points: the folder is either absent or verifies in full;
    the next build leaves one verified folder and no partial beside it."""
    target = tmp_path / "models" / "tiny"
    job = {"action": "build", "model_id": EMBEDDED_MODEL_ID, "target": str(target)}
    duration = builder.run(job, timeout=60).seconds
    rng, kills = random.Random(18_7), 0
    for _ in range(KILLS):
        kills += builder.run(job, kill_after=rng.uniform(0.0, duration)).killed
        assert not target.exists() or verify_manifest(target) == []
    assert kills >= KILLS // 2
    assert builder.run(job).returncode == 0
    assert verify_manifest(target) == []
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".incomplete")] == []
