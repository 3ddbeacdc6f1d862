"""Fixtures for the video-domain tests: one warm worker per module (each start costs seconds of imports)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from components.generation.worker import Worker, WorkerConfig


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    """An uncapped CPU worker, shared by the tests of one module."""
    supervised = Worker(WorkerConfig(device="cpu"))
    supervised.start()
    yield supervised
    supervised.close()
