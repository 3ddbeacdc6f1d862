"""Requests for a model being downloaded wait in SQLite with an ETA and run once it is verified."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from components.store import ModelStore
from components.store_queue import GenerationQueue, QueuedRequest, RequestState
from tests.store.conftest import REPO, WEIGHTS
from tests.support.hub_server import Fault, HubServer


def test_queued_request_runs_after_the_download_completes(store: ModelStore, hub: HubServer) -> None:
    """A request queued mid-download gets an ETA from progress and runs once, after the model verified."""
    hub.inject(Fault("throttle", WEIGHTS, bytes_per_s=1_000_000))
    ran: list[tuple[QueuedRequest, bool]] = []

    def run(request: QueuedRequest) -> None:
        ran.append((request, store.availability.availability(REPO).status.usable))

    ticket = store.queue.enqueue(REPO, "main", {"prompt": "a fox", "seed": 3}).ticket
    worker = threading.Thread(target=store.download_and_release, args=(REPO, "main", run))
    worker.start()
    deadline = time.monotonic() + 5
    while store.queue.eta_s(ticket) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.queue.eta_s(ticket) is not None and not ran
    worker.join()
    ((request, usable),) = ran
    assert request.payload == {"prompt": "a fox", "seed": 3} and usable
    assert store.queue.get(ticket).state is RequestState.DONE


def test_queue_survives_a_restart(tmp_path: Path) -> None:
    """A request queued by one process is still waiting for the next one."""
    GenerationQueue(tmp_path / "q.sqlite").enqueue("org/m", "main", {"n": 1})
    (waiting,) = GenerationQueue(tmp_path / "q.sqlite").waiting("org/m")
    assert waiting.payload == {"n": 1} and waiting.state is RequestState.WAITING


def test_failing_run_is_recorded_and_does_not_block_the_next(tmp_path: Path) -> None:
    """A run that raises marks its request FAILED with the error; later requests still run."""
    queue = GenerationQueue(tmp_path / "q.sqlite")
    first, second = (queue.enqueue("org/m", "main", {"n": n}) for n in (1, 2))

    def run(request: QueuedRequest) -> None:
        if request.payload["n"] == 1:
            raise MemoryError("too big")

    finished = queue.release("org/m", "main", run)
    assert [r.state for r in finished] == [RequestState.FAILED, RequestState.DONE]
    assert "MemoryError" in (queue.get(first.ticket).error or "") and not queue.waiting()
