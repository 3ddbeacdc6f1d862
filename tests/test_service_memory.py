"""Through the whole service, under a real worker memory cap: an over-budget request still yields a video."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.service import GenerationService
from components.settings import Settings

CAP = 340 * 2**20


@pytest.fixture(scope="module")
def capped_service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    data_dir = tmp_path_factory.mktemp("capped")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu", worker_memory_cap=CAP)
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    with GenerationService(settings) as started:
        yield started


def test_over_budget_request_yields_a_smaller_video_with_changes_listed(capped_service: GenerationService) -> None:
    """33×512² does not fit in 340 MiB: the service plans or adjusts it down, makes a real video, and lists each
    change; the run is recorded with the quality kept below 1."""
    stream = list(
        capped_service.generate(
            {"prompt": "a lantern", "width": 512, "height": 512, "num_frames": 33, "steps": 2, "seed": 4}
        )
    )
    result = stream[-1].data["result"]
    asked, made = 512 * 512 * 33, result.request.width * result.request.height * result.request.num_frames
    assert Path(result.video_path).is_file()
    assert result.changes, "every change must be listed"
    assert made <= asked
    assert result.attempts <= 2
    quality = capped_service.metrics._db.execute(
        "SELECT quality_kept FROM runs WHERE correlation_id = ?", (result.correlation_id,)
    ).fetchone()[0]
    assert quality == pytest.approx(made / asked)
