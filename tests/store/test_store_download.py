"""Downloads through the real huggingface_hub client against the loopback hub: resume, retries, progress."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from huggingface_hub import constants

from components.chaos.loopback_hub import Fault, HubServer
from components.store.availability import ModelStatus
from components.store.download import BandwidthPolicy, CancelToken, DownloadEvent, DownloadEventKind, RetryPolicy
from components.store.model_store import ModelStore
from recovery.errors import (
    GenerationCancelledError,
    ModelDownloadError,
    NetworkUnavailableError,
    SlowDownloadError,
)
from tests.store.conftest import REPO, WEIGHTS, stop_download_midway


def weight_requests(hub: HubServer) -> list:
    return [r for r in hub.fetched() if r.filename == WEIGHTS]


def test_download_resumes_after_mid_file_drop(store: ModelStore, hub: HubServer) -> None:
    """A connection dropped mid-file is resumed with Range from the bytes already written, not restarted."""
    size = len(hub.file_bytes(REPO, WEIGHTS))
    hub.inject(Fault("drop", WEIGHTS, after_bytes=size // 2))
    store.download(REPO)
    first, second = weight_requests(hub)
    assert first.body_bytes == size // 2
    assert second.range is not None and second.status == 206
    assert first.body_bytes + second.body_bytes <= 1.1 * size
    assert store.availability.availability(REPO).status is ModelStatus.VERIFIED


def test_cancelled_download_resumes_from_partial_file_next_time(store: ModelStore, hub: HubServer) -> None:
    """Bytes of a cancelled download are kept in the cache and the next call asks only for the rest."""
    size = len(hub.file_bytes(REPO, WEIGHTS))
    stop_download_midway(store)
    assert store.availability.availability(REPO).status is ModelStatus.PARTIAL
    hub.clear()
    result = store.download(REPO)
    (resumed,) = weight_requests(hub)
    start = int(resumed.range.removeprefix("bytes=").rstrip("-"))
    assert start > 0 and resumed.body_bytes == size - start
    assert result.bytes_resumed == start


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_transient_server_errors_are_retried_then_succeed(
    store: ModelStore, hub: HubServer, sleeps: list[float], status: int
) -> None:
    """5xx answers on a file are retried with growing backoff until the file arrives."""
    hub.inject(Fault("status", WEIGHTS, status=status, times=2))
    result = store.download(REPO)
    assert result.retries == 2
    assert sleeps == [0.5, 1.0]
    assert [r.status for r in weight_requests(hub)] == [status, status, 200]


def test_corrupted_transfer_is_discarded_and_fetched_again(store: ModelStore, hub: HubServer) -> None:
    """A byte flipped in transit fails the hash before the blob is placed; the retry fetches it whole."""
    hub.inject(Fault("flip", WEIGHTS, after_bytes=123_456))
    events: list[DownloadEvent] = []
    result = store.download(REPO, on_event=events.append)
    assert result.retries == 1 and [r.range for r in weight_requests(hub)] == [None, None]
    assert any(e.kind is DownloadEventKind.RETRY and "IntegrityError" in e.detail for e in events)
    assert store.health.verify(REPO).ok


def test_rate_limit_waits_for_retry_after(store: ModelStore, hub: HubServer, sleeps: list[float]) -> None:
    """A 429 with Retry-After on the metadata call waits exactly that long before retrying."""
    hub.inject(Fault("status", "/revision/main", status=429, retry_after=7))
    store.download(REPO)
    assert sleeps == [7.0]


def test_persistent_server_errors_end_in_a_retryable_download_error(store: ModelStore, hub: HubServer) -> None:
    """When every attempt gets a 503 the failure is a ModelDownloadError marked retryable, chained to the hub's."""
    hub.inject(Fault("status", WEIGHTS, status=503, times=None))
    with pytest.raises(ModelDownloadError) as info:
        store.download(REPO)
    assert info.value.retryable and info.value.status == 503 and info.value.files == [WEIGHTS]
    assert len(weight_requests(hub)) == 4


def test_stalled_transfer_times_out_and_resumes(store: ModelStore, hub: HubServer) -> None:
    """A server that stops sending mid-file hits the client's read timeout and the rest is fetched with Range."""
    hub.inject(Fault("stall", WEIGHTS, after_bytes=200_000, seconds=2.5))
    store.download(REPO)
    first, second = weight_requests(hub)
    assert first.range is None and second.range is not None and second.status == 206
    assert store.health.verify(REPO).ok


def test_progress_events_count_up_to_the_total_with_speed_and_eta(store: ModelStore, hub: HubServer) -> None:
    """Progress events carry monotone byte counts, a speed and an ETA, and end with COMPLETED at the total."""
    events: list[DownloadEvent] = []
    hub.inject(Fault("throttle", WEIGHTS, bytes_per_s=2_000_000))
    store.download(REPO, on_event=events.append)
    progress = [e for e in events if e.kind is DownloadEventKind.PROGRESS]
    assert progress and all(a.bytes_done <= b.bytes_done for a, b in zip(progress, progress[1:]))
    assert any(e.speed_bps > 0 and e.eta_s is not None for e in progress)
    assert events[-1].kind is DownloadEventKind.COMPLETED and events[-1].bytes_done == events[-1].bytes_total


def test_slow_link_is_reported_with_a_realistic_eta(store: ModelStore, hub: HubServer) -> None:
    """At 400 kB/s against a 1 MB/s threshold a BANDWIDTH_LIMITATION event reports the speed and a fitting ETA."""
    hub.inject(Fault("throttle", WEIGHTS, bytes_per_s=400_000))
    events: list[DownloadEvent] = []
    result = store.download(REPO, on_event=events.append)
    (slow,) = [e for e in events if e.kind is DownloadEventKind.BANDWIDTH_LIMITATION]
    assert 150_000 < slow.speed_bps < 600_000
    assert result.slow_link is not None and 0 < result.slow_link.bytes_remaining < slow.bytes_total
    expected_eta = result.slow_link.bytes_remaining / 400_000
    assert 0.5 * expected_eta < result.slow_link.eta_s < 3 * expected_eta


def test_transfer_over_its_deadline_stops_and_keeps_its_bytes(hub: HubServer, tmp_path: Path) -> None:
    """With a deadline the ETA cannot meet, the download stops with SlowDownloadError and keeps the partial file."""
    store = ModelStore(
        tmp_path / "c",
        tmp_path / "s",
        endpoint=hub.url,
        token=False,
        reserve_bytes=0,
        bandwidth=BandwidthPolicy(window_s=0.2, deadline_s=0.5),
    )
    hub.inject(Fault("throttle", WEIGHTS, bytes_per_s=200_000))
    with pytest.raises(SlowDownloadError) as info:
        store.download(REPO)
    assert 0 < info.value.bytes_remaining
    assert store.availability.availability(REPO, check_remote=False).bytes_present > 0


def test_closed_port_is_a_network_unavailable_error(tmp_path: Path) -> None:
    """A hub that refuses connections ends, after retries, in NetworkUnavailableError."""
    with HubServer() as dead:
        url = dead.url
    store = ModelStore(
        tmp_path / "c",
        tmp_path / "s",
        endpoint=url,
        token=False,
        retry=RetryPolicy(attempts=2, base_s=0),
        sleep=lambda s: None,
    )
    with pytest.raises(NetworkUnavailableError):
        store.download(REPO)


def test_offline_mode_is_a_network_unavailable_error(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE makes a download fail at once with NetworkUnavailableError, not a retry loop."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(NetworkUnavailableError):
        store.download(REPO)


def test_concurrent_cancel_from_another_thread_stops_the_download(store: ModelStore, hub: HubServer) -> None:
    """A cancel set from another thread stops a throttled transfer at the next chunk."""
    hub.inject(Fault("throttle", WEIGHTS, bytes_per_s=300_000))
    token = CancelToken()
    timer = threading.Timer(0.4, token.cancel)
    timer.start()
    with pytest.raises(GenerationCancelledError):
        store.download(REPO, cancel=token)
    timer.join()


def test_two_downloads_of_one_model_at_once_fetch_it_once(store: ModelStore, hub: HubServer) -> None:
    """A request and the Models tab asking for the same model together: the second waits (and says so), then finds
    the files in place — the weights cross the wire once and the model is whole."""
    hub.inject(Fault("throttle", WEIGHTS, bytes_per_s=1_500_000))
    second_events: list[DownloadEvent] = []
    started = threading.Event()
    first = threading.Thread(target=store.download, args=(REPO,), kwargs={"on_event": lambda event: started.set()})
    first.start()
    assert started.wait(10)
    store.download(REPO, on_event=second_events.append)
    first.join(30)
    assert second_events[0].kind is DownloadEventKind.WAITING
    assert len(weight_requests(hub)) == 1
    assert store.health.verify(REPO).ok


def test_waiting_for_another_download_can_be_cancelled(store: ModelStore, hub: HubServer) -> None:
    """Cancelling a caller that waits for another download of the model stops the wait, not the other download."""
    hub.inject(Fault("throttle", WEIGHTS, bytes_per_s=500_000))
    started = threading.Event()
    first = threading.Thread(target=store.download, args=(REPO,), kwargs={"on_event": lambda event: started.set()})
    first.start()
    assert started.wait(10)
    token = CancelToken()
    token.cancel()
    with pytest.raises(GenerationCancelledError):
        store.download(REPO, cancel=token)
    first.join(30)
    assert store.health.verify(REPO).ok
