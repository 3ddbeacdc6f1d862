"""The gallery's rows: the outputs folder newest first, each video matched to its journaled request; file names."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from components.journal import RequestJournal
from components.views.history import history_markdown, history_page, slug, video_file_name


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("A paper boat, drifting!", "a-paper-boat-drifting"),
        ("Crème brûlée à la française", "creme-brulee-a-la-francaise"),
        ("   ", "video"),
        ("日本の風景", "video"),
        ("a " * 40, "a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a"),
    ],
)
def test_slug_is_short_lowercase_and_never_empty(prompt: str, expected: str) -> None:
    """A slug keeps [a-z0-9-], folds accents, is at most 40 characters, and is "video" when nothing is left."""
    assert slug(prompt) == expected and len(slug(prompt)) <= 40


def test_video_file_name_reads_as_date_prompt_id_and_attempt() -> None:
    """The name is <YYYYMMDD-HHMMSS>-<slug>-<correlation id>-<attempt>.mp4."""
    name = video_file_name("A paper boat, drifting!", "abc123", 2, datetime(2026, 12, 1, 13, 45, 7))
    assert name == "20261201-134507-a-paper-boat-drifting-abc123-2.mp4"


def test_video_file_name_takes_a_timestamp_and_long_ids() -> None:
    """A float timestamp works too, and a 64-character id keeps the name plain (served by the REST API)."""
    key = "k-" * 31 + "ab"
    name = video_file_name("x" * 300, key, 12, 0.0)
    assert re.fullmatch(r"\d{8}-\d{6}-x{40}-" + key + r"-12\.mp4", name) and len(name) <= 160


def _video(folder: Path, name: str, mtime: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\0\0\0\x18ftypmp42")
    os.utime(path, (mtime, mtime))
    return path


def _journaled(journal: RequestJournal, correlation_id: str, name: str, **request: object) -> None:
    asked = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 5, "steps": 1, "seed": 3, **request}
    journal.accept(correlation_id, asked)
    journal.complete(correlation_id, {"video": name, "attempts": 2, "degraded": False, "request": asked})


def test_page_is_newest_first_with_each_videos_request(tmp_path: Path) -> None:
    """Videos come newest first; one the journal holds carries its prompt and settings, one it does not is listed
    with settings unknown; an id with hyphens is found."""
    journal = RequestJournal(tmp_path / "journal.sqlite")
    outputs = tmp_path / "outputs"
    old = video_file_name("a boat", "my-key-1", 1, 1000.0)
    _video(outputs, old, 1000)
    _journaled(journal, "my-key-1", old, prompt="a boat")
    _video(outputs, "stray-1.mp4", 2000)
    new = video_file_name("a red kite", "abc", 2, 3000.0)
    _video(outputs, new, 3000)
    _journaled(journal, "abc", new, prompt="a red kite")
    page = history_page(outputs, journal)
    assert [item.file_name for item in page.items] == [new, "stray-1.mp4", old]
    assert page.items[0].prompt == "a red kite" and page.items[0].attempts == 2
    assert page.items[1].request is None and "settings unknown" in history_markdown(page.items[1])
    assert page.items[2].correlation_id == "my-key-1" and page.items[2].request["seed"] == 3


def test_a_journal_entry_for_another_file_does_not_claim_a_video(tmp_path: Path) -> None:
    """A file whose name ends in a journaled id but is not that request's video is not given its settings."""
    journal = RequestJournal(tmp_path / "journal.sqlite")
    _journaled(journal, "abc", "20260101-000000-other-abc-1.mp4")
    _video(tmp_path / "outputs", "20260101-000000-copy-abc-1.mp4", 10)
    (item,) = history_page(tmp_path / "outputs", journal).items
    assert item.request is None


def test_pages_split_the_videos_and_a_page_past_the_end_is_the_last(tmp_path: Path) -> None:
    """Five videos, two a page: three pages; page 9 shows the oldest one."""
    for number in range(5):
        _video(tmp_path, f"v{number}-1.mp4", 100 + number)
    first = history_page(tmp_path, None, per_page=2)
    last = history_page(tmp_path, None, page=9, per_page=2)
    assert (first.pages, first.total, [i.file_name for i in first.items]) == (3, 5, ["v4-1.mp4", "v3-1.mp4"])
    assert (last.page, [i.file_name for i in last.items]) == (2, ["v0-1.mp4"])
    assert last.label() == "Page 3 of 3 · 5 videos"


def test_an_empty_or_missing_folder_is_an_empty_gallery(tmp_path: Path) -> None:
    """No outputs folder yet: no items, and the caption says where videos will appear."""
    page = history_page(tmp_path / "nothing", None)
    assert page.items == () and "appear here" in page.label()
