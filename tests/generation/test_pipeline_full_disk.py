"""The mp4 export on a real full disk (the outputs folder on a small tmpfs filled by another writer): the request
fails with the catalogued message, nothing half-written appears under a video's name, earlier videos stay."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from components.generation.pipeline import _export_mp4
from components.service import GenerationService
from recovery.classify import classify_exception
from recovery.errors import GenerationFailedError, StorageFullError
from recovery.messages import guidance_for
from recovery.taxonomy import EnhancedFailureType
from tests.support.small_disk import fill, small_disk

REQUEST = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 1, "seed": 3}
FULL = guidance_for(EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT).user_message
# 0: ffmpeg cannot even write the header (a broken pipe); 2 KiB: the header fits and ffmpeg exits quietly after a
# truncated write — imageio reports nothing, so only the check of the written file catches it
LEAVES = (0, 2048)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "small-disk", "1m") as mount:
        yield mount


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Nine 64² frames of noise, as the embedded model makes them."""
    return np.random.default_rng(0).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("leave", LEAVES)
def test_export_on_a_full_disk_raises_storage_full_and_keeps_earlier_videos(
    disk: Path, frames: np.ndarray, leave: int
) -> None:
    """Nothing under the new video's name, no partial left beside it, the earlier video byte for byte intact."""
    earlier = disk / "earlier.mp4"
    _export_mp4(frames, earlier, 8)
    before = _sha(earlier)
    assert earlier.stat().st_size > leave  # the disk really cannot hold the next one
    fill(disk, leave=leave)
    with pytest.raises(StorageFullError) as info:
        _export_mp4(frames, disk / "next.mp4", 8)
    assert classify_exception(info.value).failure_type is EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT
    assert sorted(p.name for p in disk.iterdir()) == ["earlier.mp4", "other-writer.bin"]
    assert _sha(earlier) == before


@pytest.fixture
def full_outputs(offline_service: GenerationService, tmp_path: Path) -> Iterator[Path]:
    """The session service's outputs folder on a 1 MiB tmpfs for this test (its own files reappear after)."""
    with small_disk(offline_service.settings.outputs_dir, "1m") as mount:
        yield mount


def test_request_on_a_full_outputs_disk_fails_with_the_catalogued_message(
    offline_service: GenerationService, full_outputs: Path, frames: np.ndarray
) -> None:
    """A real request whose mp4 the disk cannot hold fails with the catalogued message (no path, no traceback);
    the outputs folder holds the earlier video (written by the same writer), intact, and nothing else of ours."""
    earlier = full_outputs / "earlier-1.mp4"
    _export_mp4(frames, earlier, 8)
    before = _sha(earlier)
    fill(full_outputs, leave=2048)
    with pytest.raises(GenerationFailedError) as info:
        offline_service.generate_video({**REQUEST, "seed": 4})
    error = info.value.report["error"]
    assert error["type"] == "storage_space_insufficient" and error["user_message"].startswith(FULL)
    assert str(full_outputs) not in str(info.value.report) and "Traceback" not in str(info.value.report)
    assert sorted(p.name for p in full_outputs.iterdir()) == sorted([earlier.name, "other-writer.bin"])
    assert _sha(earlier) == before
