"""Files written beside their name and renamed into place, and hashed one way (components/system/files.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from components.system.files import git_blob_id, hash_file, replacing, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    """An error inside the block: the old content stays, and nothing half-written is left beside it."""
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as partial:
        partial.write_text("half")
        raise RuntimeError("disk gone")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_finished_write_replaces_and_keeps_the_suffix(tmp_path: Path) -> None:
    """The partial keeps the final suffix (an mp4 writer picks its container from it) and is renamed over."""
    target = tmp_path / "out" / "video.mp4"
    with replacing(target) as partial:
        assert partial.suffix == ".mp4" and partial.parent == target.parent and "incomplete" in partial.name
        partial.write_bytes(b"frames")
    assert target.read_bytes() == b"frames" and os.listdir(target.parent) == ["video.mp4"]


def test_a_folder_replaces_a_folder(tmp_path: Path) -> None:
    """A model folder built beside replaces the old one whole."""
    target = tmp_path / "model"
    (target / "old").mkdir(parents=True)
    with replacing(target) as partial:
        (partial / "new").mkdir(parents=True)
    assert [p.name for p in target.iterdir()] == ["new"] and os.listdir(tmp_path) == ["model"]


def test_write_text_atomic_and_symlinks(tmp_path: Path) -> None:
    """Text and symlinks take the same path: the reader sees the old or the new, never a mix."""
    write_text_atomic(tmp_path / "ref", "abc")
    with replacing(tmp_path / "link") as partial:
        os.symlink("ref", partial)
    assert (tmp_path / "link").read_text() == "abc" and (tmp_path / "link").is_symlink()


def test_hash_file_gives_sha256_and_the_git_blob_id_in_one_pass(tmp_path: Path) -> None:
    """The hub's two names for a file: sha256 of an LFS blob, git's blob id of a small one; progress counted."""
    data = os.urandom(5 * 2**20 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen: list[int] = []
    digests = hash_file(path, "sha256", "git", on_bytes=seen.append)
    assert digests == {"sha256": hashlib.sha256(data).hexdigest(), "git": git_blob_id(data)}
    assert sum(seen) == len(data) and len(seen) == 2
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git hash-object of an empty file
