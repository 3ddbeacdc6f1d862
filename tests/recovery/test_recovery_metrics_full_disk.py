"""The metrics store on a real full disk (a small tmpfs filled by another writer): the write is refused as
StorageFullError and reported, nothing stored is lost, the file stays readable."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import recovery
from recovery import MetricsStore, events
from recovery.classify import classify_exception
from recovery.errors import StorageFullError
from recovery.messages import guidance_for
from recovery.metrics import RunRow
from recovery.taxonomy import EnhancedFailureType
from tests.support.small_disk import fill, small_disk

FULL = guidance_for(EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT).user_message


def run(cid: str, at: float = 1000.0, model: str = "m") -> RunRow:
    return RunRow(cid, at - 1, at, True, 1, False, None, None, True, model)


@pytest.fixture
def full_store(tmp_path: Path, clock) -> Iterator[tuple[MetricsStore, Path]]:
    """A store holding three runs, on a 2 MiB disk then filled by another writer."""
    with small_disk(tmp_path / "small-disk", "2m") as disk:
        store = MetricsStore(disk / "metrics.sqlite", clock=clock)
        store.record_runs([run("a"), run("b"), run("c")])
        filler = fill(disk)
        yield store, filler
        store.close()


def _big(n: int) -> list[RunRow]:
    """Runs with long model ids: more pages than a full disk can give."""
    return [run(f"new-{i}", model="m" * 4000) for i in range(n)]


def test_metric_write_on_a_full_disk_is_storage_full(full_store: tuple[MetricsStore, Path]) -> None:
    """SQLite's "database or disk is full" arrives as StorageFullError (classified storage_space_insufficient),
    and the store remembers it in ``write_error``."""
    store, _ = full_store
    with pytest.raises(StorageFullError) as info:
        store.record_runs(_big(20))
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert classify_exception(info.value).failure_type is EnhancedFailureType.STORAGE_SPACE_INSUFFICIENT
    assert store.write_error is info.value


def test_full_disk_loses_no_stored_run_and_the_file_stays_readable(full_store: tuple[MetricsStore, Path]) -> None:
    """After a refused write (rolled back as a whole), the file passes SQLite's integrity check and a fresh store
    opened on it reads the three earlier runs and none of the refused ones."""
    store, _ = full_store
    with pytest.raises(StorageFullError):
        store.record_runs(_big(20))
    with sqlite3.connect(store.path) as reader:
        assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reopened = MetricsStore(store.path)
    try:
        assert reopened.count_runs() == 3 and reopened.summary()["requests"] == 3
    finally:
        reopened.close()


def test_try_record_run_reports_a_full_disk_with_the_catalogued_message(
    full_store: tuple[MetricsStore, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A generation's metric write on a full disk answers False and logs the catalogued message, no traceback."""
    store, _ = full_store
    with caplog.at_level(logging.WARNING, logger="recovery.metrics"):
        assert store.try_record_run(run("m" * 20000)) is False
    (record,) = caplog.records
    assert FULL in record.getMessage() and record.exc_info is None


def test_metrics_write_again_once_space_is_freed(full_store: tuple[MetricsStore, Path]) -> None:
    """With the other writer's file gone the same write is stored and ``write_error`` is cleared."""
    store, filler = full_store
    with pytest.raises(StorageFullError):
        store.record_runs(_big(20))
    filler.unlink()
    store.record_runs(_big(20))
    assert store.count_runs() == 23 and store.write_error is None


def test_listener_on_a_full_disk_does_not_raise(full_store: tuple[MetricsStore, Path]) -> None:
    """A finished strategy whose row the full disk refuses leaves the event's sender running; ``write_error``
    says the row is missing."""
    store, _ = full_store
    data = {"attempt": 1, "failure_type": "vram_exhaustion", "severity": "medium", "success": True}
    store(
        recovery.RecoveryEvent(
            events.STRATEGY_FINISHED, "c" * 20000, 1000.0, {**data, "strategy": "a", "duration_s": 0.1}
        )
    )
    assert isinstance(store.write_error, StorageFullError) and store.count() == 0
