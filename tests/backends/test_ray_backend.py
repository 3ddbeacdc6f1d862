"""The service on a pool of two Ray replicas: requests at once, a replica killed mid-request, an out-of-memory
inside a replica, cancel, nothing lost — the same recovery as with the local worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from components.backends.ray_backend import ReplicaPool
from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.request import GenerationRequest
from components.service import GenerationService
from components.views.presenters import timeline_line
from components.views.reports import ServiceEvent, ServiceEventKind
from recovery.errors import ModelLoadTimeoutError, RequestCancelledError

SMALL = {"prompt": "a lantern", "width": 64, "height": 64, "num_frames": 9, "steps": 2, "seed": 3}
OVER_BUDGET = {"prompt": "a lantern", "width": 640, "height": 640, "num_frames": 9, "steps": 2, "seed": 4}


def _collect(
    service: GenerationService,
    request: dict[str, Any],
    correlation_id: str | None = None,
    on_event: Callable[[ServiceEvent], None] | None = None,
) -> tuple[list[tuple[float, ServiceEvent]], BaseException | None]:
    """Every event of one request with the time it came, and the error that ended it (``None``: a result)."""
    seen: list[tuple[float, ServiceEvent]] = []
    try:
        for event in service.generate(request, correlation_id=correlation_id):
            seen.append((time.monotonic(), event))
            if on_event is not None:
                on_event(event)
    except Exception as exc:
        return seen, exc
    return seen, None


def _replicas(events: list[tuple[float, ServiceEvent]], attempt: int | None = None) -> set[str]:
    return {
        event.data["replica"]
        for _when, event in events
        if event.kind is ServiceEventKind.PHASE and (attempt is None or event.data.get("attempt") == attempt)
    }


def test_two_requests_run_at_once_on_two_replicas(ray_service: GenerationService) -> None:
    """Two requests sent together each run on their own replica, both jobs in flight at the same time."""
    runs: list[Any] = [None, None]
    threads = [
        threading.Thread(target=lambda i=i: runs.__setitem__(i, _collect(ray_service, {**SMALL, "seed": i})))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    (first, first_error), (second, second_error) = runs
    assert first_error is None and second_error is None
    assert _replicas(first) | _replicas(second) == {"replica-0", "replica-1"}
    assert len(_replicas(first)) == len(_replicas(second)) == 1

    def span(events: list[tuple[float, ServiceEvent]]) -> tuple[float, float]:
        """From the job's start on its replica (its first phase) to its result."""
        started = [when for when, event in events if event.kind is ServiceEventKind.PHASE]
        return started[0], events[-1][0]

    (start_a, end_a), (start_b, end_b) = span(first), span(second)
    assert start_a < end_b and start_b < end_a, "the two requests ran one after the other"


def test_an_out_of_memory_in_a_replica_is_recovered_by_the_ladder(ray_service: GenerationService) -> None:
    """9×640² (about 730 MiB) under the replicas' 340 MiB cap (planning off): a real out-of-memory inside the
    replica, then the memory ladder makes a video as with the local worker: at smaller settings, marked changed, or
    (a decode that ran out) the kept latents decoded streamed at full size — which one varies with the allocator."""
    events, error = _collect(ray_service, OVER_BUDGET)
    assert error is None, error
    failures = [
        event.data["failure_type"]
        for _when, event in events
        if event.kind is ServiceEventKind.RECOVERY and event.message == "recovery.failure_classified"
    ]
    assert failures and failures[0] == "vram_exhaustion"
    result = events[-1][1].data["result"]
    assert result.changes
    if result.changed:  # the ladder's lower settings
        assert result.request.width * result.request.height * result.request.num_frames < 640 * 640 * 9
    else:  # or, when the decode ran out, its first rung: the kept latents decoded again, streamed, at full size
        assert result.output.denoise_skipped and result.output.options.streamed_decode


def test_cancel_stops_a_running_request_and_the_replica_stays_warm(
    ray_service: GenerationService, pool: ReplicaPool
) -> None:
    """A cancel at the first denoising step ends the request with ``RequestCancelledError``, journaled cancelled,
    and the replica that ran it is the same process afterwards (no restart)."""
    correlation_id = f"ray-cancel-{time.time_ns()}"
    ran_on: list[str] = []

    def cancel_at_first_step(event: ServiceEvent) -> None:
        if event.kind is ServiceEventKind.PHASE:
            ran_on.append(event.data["replica"])
        if event.kind is ServiceEventKind.PROGRESS:
            ray_service.cancel(correlation_id)

    pids = {replica.name: replica.info.get("pid") for replica in pool.replicas}
    _events, error = _collect(ray_service, {**SMALL, "steps": 50}, correlation_id, cancel_at_first_step)
    assert isinstance(error, RequestCancelledError)
    entry = ray_service.request_status(correlation_id)
    assert entry is not None and entry.status.value == "cancelled"
    replica = next(replica for replica in pool.replicas if replica.name == ran_on[-1])
    assert replica.info.get("pid") == pids[replica.name]


def test_more_requests_than_replicas_wait_and_none_is_lost(ray_service: GenerationService) -> None:
    """Three requests on two replicas: the third waits for a free one; all three are journaled completed."""
    ids = [f"ray-three-{index}-{time.time_ns()}" for index in range(3)]
    errors: dict[str, BaseException | None] = {}
    threads = [
        threading.Thread(
            target=lambda cid=cid: errors.__setitem__(cid, _collect(ray_service, SMALL, cid)[1]),
        )
        for cid in ids
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert errors == dict.fromkeys(ids)
    for cid in ids:
        entry = ray_service.request_status(cid)
        assert entry is not None and entry.status.value == "completed"


def test_a_replica_killed_mid_request_hands_it_to_the_other(ray_service: GenerationService, pool: ReplicaPool) -> None:
    """SIGKILL of the replica at the first denoising step: the request completes on the other replica in its
    second attempt, and the timeline says where each attempt ran and that the first failed."""
    killed: list[str] = []

    def kill_at_first_step(event: ServiceEvent) -> None:
        if event.kind is ServiceEventKind.PHASE and not killed:
            killed.append(event.data["replica"])
        if event.kind is ServiceEventKind.PROGRESS and len(killed) == 1:
            replica = next(replica for replica in pool.replicas if replica.name == killed[0])
            os.kill(replica.info["pid"], signal.SIGKILL)
            killed.append("done")

    events, error = _collect(ray_service, {**SMALL, "steps": 8}, on_event=kill_at_first_step)
    assert error is None, error
    result = events[-1][1].data["result"]
    assert result.attempts == 2
    (other,) = {"replica-0", "replica-1"} - {killed[0]}
    assert _replicas(events, attempt=1) == {killed[0]} and _replicas(events, attempt=2) == {other}
    timeline = "\n".join(line for _when, event in events if (line := timeline_line(event)))
    assert f"(attempt 1, on {killed[0]})" in timeline and f"(attempt 2, on {other})" in timeline
    assert "**Attempt 1 failed**" in timeline and "system_resource_error" in timeline


def test_a_load_over_its_time_limit_ends_the_replica_with_ray_kill(
    ray_service: GenerationService, pool: ReplicaPool
) -> None:
    """A model load longer than the replica's limit (0.01 s here) raises ``ModelLoadTimeoutError``, and the actor
    is killed and replaced (a hung load cannot be interrupted otherwise; ``ray.cancel`` does not stop a task)."""
    cold = next((replica for replica in pool.replicas if replica.loaded_model is None), None)
    if cold is None:  # both warm: a fresh one has no model loaded
        cold = pool.replicas[0]
        cold.restart()
    config, restarts = cold.config, cold.restarts
    cold.config = replace(config, load_timeout_s=0.01)
    try:
        with pytest.raises(ModelLoadTimeoutError):
            for _event in cold.run(
                GenerationRequest.from_dict({**SMALL, "model_id": EMBEDDED_MODEL_ID}),
                ray_service.settings.outputs_dir / "load-timeout.mp4",
                model_path=ray_service.store.ensure(EMBEDDED_MODEL_ID),
            ):
                pass
    finally:
        cold.config = config
    assert cold.restarts == restarts + 1 and cold.loaded_model is None


_LISTENER = re.compile(r"^LISTEN\s+\S+\s+\S+\s+(\S+):(\d+)\s+\S+\s*(.*)$")


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it (Ray's head processes and replicas are all children of this one)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def test_every_ray_socket_listens_on_loopback_only(ray_service: GenerationService) -> None:
    """``ss -ltnp`` of Ray's processes (the GCS, raylet, agents, replicas): each listening address is 127.0.0.1."""
    ours = _descendants(os.getpid())
    listening: list[tuple[str, int, str]] = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        match = _LISTENER.match(line)
        if match is None:
            continue
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", match.group(3))}
        if pids & ours:
            listening.append((match.group(1), int(match.group(2)), match.group(3)))
    assert len(listening) >= 3, f"too few Ray listeners found to judge: {listening}"
    loopback = {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}
    assert [address for address in listening if address[0] not in loopback] == []
