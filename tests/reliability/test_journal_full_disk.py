"""The request journal on a real full disk (a small tmpfs filled by another writer): requests are refused with the
catalogued message, nothing stored is lost, the file stays readable."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.journal import RequestJournal, RequestState
from components.service import GenerationService
from components.settings import Settings
from recovery.classify import classify_exception
from recovery.errors import GenerationFailedError, StorageFullError
from recovery.messages import guidance_for
from recovery.taxonomy import EnhancedFailureType
from tests.support.small_disk import fill, small_disk

REQUEST = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 1, "seed": 3}
FULL = guidance_for(EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT).user_message


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "small-disk", "2m") as mount:
        yield mount


@pytest.fixture
def full_journal(disk: Path) -> Iterator[tuple[RequestJournal, Path]]:
    """A journal holding one completed and one running entry, on a disk then filled by another writer."""
    journal = RequestJournal(disk / "journal.sqlite")
    journal.accept("done", REQUEST)
    journal.complete("done", {"video": "done-1.mp4"})
    journal.accept("busy", REQUEST)
    journal.mark_running("busy")
    filler = fill(disk)
    yield journal, filler
    journal.close()


def test_journal_write_on_a_full_disk_is_storage_full(full_journal: tuple[RequestJournal, Path]) -> None:
    """SQLite's "database or disk is full" arrives as StorageFullError, classified storage_space_insufficient."""
    journal, _ = full_journal
    with pytest.raises(StorageFullError) as info:
        journal.accept("new", {**REQUEST, "prompt": "x" * 5000})
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert classify_exception(info.value).failure_type is EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT


def test_full_disk_loses_nothing_stored_and_the_file_stays_readable(
    full_journal: tuple[RequestJournal, Path],
) -> None:
    """After refused writes, a fresh connection passes SQLite's integrity check and reads every earlier entry as
    it was; the refused one is absent."""
    journal, _ = full_journal
    before = {i: journal.get(i) for i in ("done", "busy")}
    for write in (
        lambda: journal.accept("new", {**REQUEST, "prompt": "x" * 5000}),
        lambda: journal.fail("busy", "y" * 5000, {"error": {"message": "z" * 5000}}),
    ):
        with pytest.raises(StorageFullError):
            write()
    with sqlite3.connect(journal.path) as reader:
        assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reopened = RequestJournal(journal.path)
    try:
        assert {i: reopened.get(i) for i in ("done", "busy")} == before and reopened.get("new") is None
        assert [e.id for e in reopened.unfinished()] == ["busy"]
    finally:
        reopened.close()


def test_journal_writes_again_once_space_is_freed(full_journal: tuple[RequestJournal, Path]) -> None:
    """The refusal is not sticky: with the other writer's file gone, the same write is stored."""
    journal, filler = full_journal
    with pytest.raises(StorageFullError):
        journal.accept("new", {**REQUEST, "prompt": "x" * 5000})
    filler.unlink()
    assert journal.accept("new", {**REQUEST, "prompt": "x" * 5000})
    assert journal.get("new").status is RequestState.ACCEPTED  # type: ignore[union-attr]


def test_service_refuses_a_request_the_full_disk_cannot_journal(disk: Path, tmp_path: Path) -> None:
    """With the data folder's disk full, a request fails before any work starts with the catalogued message (no
    path, no traceback), and the entries journaled before stay."""
    settings = Settings(data_dir=disk / "data", hub_cache_dir=tmp_path / "hub", device="cpu")
    service = GenerationService(settings)
    try:
        service.journal.accept("earlier", REQUEST)
        fill(disk)
        with pytest.raises(GenerationFailedError) as info:
            service.generate_video({**REQUEST, "prompt": "a paper boat " * 150})
        error = info.value.report["error"]
        assert error["type"] == "storage_space_insufficient" and error["user_message"] == FULL
        assert str(disk) not in str(info.value.report) and "Traceback" not in str(info.value.report)
        assert service.request_status("earlier").status is RequestState.ACCEPTED  # type: ignore[union-attr]
    finally:
        service.close()
