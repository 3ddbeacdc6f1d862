"""EnhancedModelDownloader: hub downloads that resume, retry, report progress, verify, and can be cancelled.

Transfers go through ``huggingface_hub``'s own ``http_get`` (Range resume, its retries on dropped connections,
429 handling) into ``blobs/<etag>.incomplete`` files that, unlike the hub client's per-call temporary files,
survive a failed attempt: the next attempt, or the next run of the app, resumes where the bytes stopped. Each
finished blob is checked against its size and hash before ``os.replace`` puts it in place, so a half-written or
corrupt file never appears under a blob name. On top: retries with exponential backoff for transient failures
(5xx, 429 with ``Retry-After``, timeouts, dropped or refused connections), progress events with speed and ETA, a
measured-bandwidth check, and errors translated into the typed errors of ``recovery.errors``.

A disk that fills up mid-transfer (``ENOSPC``: another writer took the space after the pre-flight) is not retried:
it raises ``StorageFullError`` with what is still needed, what is free and the clean-up plan that would make room.
The bytes already written stay in their ``.incomplete`` blob so the next request resumes there
(``full_disk="keep"``, the default) or are deleted to give the space back (``full_disk="remove"``, the user's
choice); finished blobs and other models are never touched.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import httpx2
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers
from huggingface_hub.utils.tqdm import silent_tqdm

from components.store.cache import HubCache, ManifestEntry, RevisionManifest, is_commit_hash
from components.store.disk import preflight
from components.store.integrity import hash_blob
from recovery.backoff import exponential_delay
from recovery.errors import (
    GenerationCancelledError,
    IntegrityError,
    ModelAccessError,
    ModelDownloadError,
    ModelVersionError,
    NetworkUnavailableError,
    SlowDownloadError,
    StorageFullError,
)
from recovery.messages import format_bytes

__all__ = [
    "FULL_DISK_CHOICES",
    "BandwidthPolicy",
    "BandwidthReport",
    "CancelToken",
    "DownloadEvent",
    "DownloadEventKind",
    "DownloadResult",
    "EnhancedModelDownloader",
    "FullDiskChoice",
    "RetryPolicy",
    "access_steps",
    "retry_delay_for",
]

T = TypeVar("T")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_NETWORK = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
FullDiskChoice = Literal["keep", "remove"]
FULL_DISK_CHOICES: tuple[FullDiskChoice, ...] = ("keep", "remove")


class DownloadEventKind(str, Enum):
    WAITING = "download.waiting"  # another download of the same model is running: this one waits for it
    STARTED = "download.started"
    PROGRESS = "download.progress"
    RETRY = "download.retry"
    BANDWIDTH_LIMITATION = "download.bandwidth_limitation"
    FILE_DONE = "download.file_done"
    COMPLETED = "download.completed"


@dataclass(frozen=True)
class DownloadEvent:
    """One progress record; ``bytes_done`` counts the whole revision, resumed bytes included."""

    kind: DownloadEventKind
    repo_id: str
    commit: str
    path: str | None
    bytes_done: int
    bytes_total: int
    speed_bps: float
    eta_s: float | None
    attempt: int = 0
    detail: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures; ``Retry-After`` from the server wins when it is given."""

    attempts: int = 6
    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"`attempts` must be >= 1 (got {self.attempts})")
        if self.base_s < 0 or self.factor < 1 or self.max_s < self.base_s:
            raise ValueError(f"invalid backoff: base_s={self.base_s}, factor={self.factor}, max_s={self.max_s}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(float(retry_after), self.max_s * 5)
        return exponential_delay(attempt, self.base_s, factor=self.factor, max_s=self.max_s)


@dataclass(frozen=True)
class BandwidthPolicy:
    """Below ``min_bytes_per_s`` measured over ``window_s`` the link is reported as limited; with ``deadline_s``
    a transfer whose ETA exceeds it stops with ``SlowDownloadError`` (its bytes are kept for resuming)."""

    min_bytes_per_s: float = 1_000_000.0
    window_s: float = 3.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.min_bytes_per_s < 0 or self.window_s <= 0:
            raise ValueError(f"invalid bandwidth policy: {self}")


@dataclass(frozen=True)
class BandwidthReport:
    """A measured slow link: speed, the threshold it fell under, and the realistic ETA at that speed."""

    bytes_per_s: float
    threshold_bytes_per_s: float
    bytes_remaining: int
    eta_s: float


@dataclass(frozen=True)
class DownloadResult:
    repo_id: str
    revision: str
    commit: str
    snapshot: Path
    files_fetched: tuple[str, ...]
    bytes_transferred: int
    bytes_resumed: int
    seconds: float
    retries: int
    slow_link: BandwidthReport | None = None


class CancelToken:
    """Set from any thread to stop a download at the next chunk; the partial file is kept for resuming."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


EventListener = Callable[[DownloadEvent], None]


def access_steps(repo_id: str, endpoint: str | None = None) -> tuple[str, ...]:
    """What a user does to get access to a gated or private repo."""
    base = (endpoint or "https://huggingface.co").rstrip("/")
    return (
        f"Open {base}/{repo_id} while logged in and accept the model's license conditions.",
        f"Create a read token at {base}/settings/tokens.",
        "Set it as HF_TOKEN (or run `hf auth login`) and restart Kintsugi.",
        "Or pick another model from the suggestions; ungated alternatives need no token.",
    )


def retry_delay_for(exc: BaseException, attempt: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait before retrying after ``exc``, or None when it is not transient."""
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, OfflineModeIsEnabled)):
        return None
    if isinstance(exc, HfHubHTTPError):
        response = exc.response
        if response is None or response.status_code not in _TRANSIENT_STATUS:
            return None
        retry_after = response.headers.get("Retry-After", "")
        return policy.delay(attempt, float(retry_after) if retry_after.isdigit() else None)
    if isinstance(exc, (*_TRANSIENT_NETWORK, IntegrityError)):
        return policy.delay(attempt)
    return None


class _Transfer:
    """Byte accounting, speed, ETA and the bandwidth check for one download call."""

    def __init__(
        self,
        downloader: EnhancedModelDownloader,
        manifest: RevisionManifest,
        total: int,
        done: int,
        on_event: EventListener | None,
    ) -> None:
        self.d, self.manifest, self.total, self.done = downloader, manifest, total, done
        self.on_event = on_event
        self.transferred = 0
        self.samples: deque[tuple[float, int]] = deque()
        self.first_byte_at: float | None = None
        self.last_emit = 0.0  # progress is sent every 0.1 s or every 1 % of the total, whichever comes first
        self.last_emit_bytes = done
        self.slow: BandwidthReport | None = None
        self.path: str | None = None

    def speed(self) -> float:
        if len(self.samples) < 2 or self.samples[-1][0] <= self.samples[0][0]:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0)

    def eta(self) -> float | None:
        speed = self.speed()
        return (self.total - self.done) / speed if speed > 0 else None

    def add(self, n: int) -> None:
        now = self.d.clock()
        if self.first_byte_at is None:
            self.first_byte_at = now
            self.samples.append((now, self.transferred))
        self.done += n
        self.transferred += n
        self.samples.append((now, self.transferred))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.d.bandwidth.window_s:
            self.samples.popleft()
        if now - self.last_emit >= 0.1 or self.done - self.last_emit_bytes >= self.total / 100:
            self.last_emit, self.last_emit_bytes = now, self.done
            self.emit(DownloadEventKind.PROGRESS)
        if now - self.first_byte_at >= self.d.bandwidth.window_s:
            self._check_bandwidth()

    def _check_bandwidth(self) -> None:
        policy, speed = self.d.bandwidth, self.speed()
        if speed <= 0 or speed >= policy.min_bytes_per_s:
            return
        remaining = self.total - self.done
        if self.slow is None:
            self.slow = BandwidthReport(speed, policy.min_bytes_per_s, remaining, remaining / speed)
            self.emit(
                DownloadEventKind.BANDWIDTH_LIMITATION,
                detail=f"{speed / 1e3:.0f} kB/s, below {policy.min_bytes_per_s / 1e3:.0f} kB/s",
            )
        if policy.deadline_s is not None and remaining / speed > policy.deadline_s:
            raise SlowDownloadError(
                f"{self.manifest.repo_id}: {speed / 1e3:.0f} kB/s leaves {remaining / speed:.0f} s, over the "
                f"{policy.deadline_s:.0f} s allowed",
                model_id=self.manifest.repo_id,
                bytes_per_second=speed,
                bytes_remaining=remaining,
            )

    def emit(self, kind: DownloadEventKind, *, attempt: int = 0, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(
                DownloadEvent(
                    kind,
                    self.manifest.repo_id,
                    self.manifest.commit,
                    self.path,
                    self.done,
                    self.total,
                    self.speed(),
                    self.eta(),
                    attempt,
                    detail,
                )
            )


class _ProgressFile:
    """The file ``http_get`` writes into: counts bytes and stops on cancellation."""

    def __init__(self, f: BinaryIO, transfer: _Transfer, cancel: CancelToken | None) -> None:
        self._f, self._transfer, self._cancel = f, transfer, cancel

    def write(self, data: bytes) -> int:
        if self._cancel is not None and self._cancel.cancelled:
            raise GenerationCancelledError(
                f"download of {self._transfer.manifest.repo_id} cancelled", phase="download", steps_completed=0
            )
        n = self._f.write(data)
        self._transfer.add(n)
        return n

    def truncate(self, size: int | None = None) -> int:
        # http_get truncates when a server ignores Range; those bytes no longer count as done.
        before = self._f.seek(0, os.SEEK_END)
        result = self._f.truncate(size)
        self._transfer.done -= before - result
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class EnhancedModelDownloader:
    """Download revisions of hub repos into a :class:`HubCache` through the real ``huggingface_hub`` client."""

    def __init__(
        self,
        cache: HubCache,
        *,
        endpoint: str | None = None,
        token: str | bool | None = None,
        retry: RetryPolicy = RetryPolicy(),
        bandwidth: BandwidthPolicy = BandwidthPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache, self.endpoint, self.token = cache, endpoint, token
        self.retry, self.bandwidth, self.sleep, self.clock = retry, bandwidth, sleep, clock

    # -- metadata --------------------------------------------------------------------------------------------
    def remote_manifest(self, repo_id: str, revision: str = "main") -> RevisionManifest:
        """Every file of ``revision`` with size and hashes, from the hub (retried; errors typed)."""
        api = HfApi(endpoint=self.endpoint, token=self.token)

        def fetch() -> RevisionManifest:
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
            entries = tuple(
                ManifestEntry(
                    s.rfilename,
                    s.lfs.size if s.lfs else (s.size or 0),
                    s.blob_id or "",
                    s.lfs.sha256 if s.lfs else None,
                )
                for s in info.siblings or ()
            )
            return RevisionManifest(repo_id, str(info.sha), entries)

        return self._with_retries(fetch, repo_id, revision, (), None)[0]

    # -- transfer --------------------------------------------------------------------------------------------
    def download(
        self,
        repo_id: str,
        revision: str = "main",
        *,
        manifest: RevisionManifest | None = None,
        files: Iterable[str] | None = None,
        on_event: EventListener | None = None,
        cancel: CancelToken | None = None,
        set_ref: bool = True,
        fresh: bool = False,
        full_disk: FullDiskChoice = "keep",
    ) -> DownloadResult:
        """Fetch what is missing of a revision (resuming partial blobs), verify each blob, link the snapshot.

        ``files`` limits the fetch to some paths (repair); ``fresh`` re-fetches them even when a blob exists;
        ``set_ref=False`` leaves ``refs/<revision>`` untouched (an update downloads beside the current one);
        ``full_disk`` says what happens to the partial blobs of this download when the disk fills up: ``"keep"``
        them for resuming, or ``"remove"`` them (``StorageFullError`` is raised either way).

        One download of a model at a time — a download, a repair, an update; threads and processes alike (a file
        lock per model in the cache, ``HubCache.model_lock``): a second caller gets a ``WAITING`` event, waits (a
        ``cancel`` ends the wait), then finds the finished files and fetches only what is still missing, instead
        of appending to the same partial file at the same time.
        """
        if full_disk not in FULL_DISK_CHOICES:
            raise ValueError(f"`full_disk` must be one of {', '.join(FULL_DISK_CHOICES)} (got {full_disk!r})")
        with self._one_at_a_time(repo_id, on_event, cancel):
            return self._download(
                repo_id,
                revision,
                manifest=manifest,
                files=files,
                on_event=on_event,
                cancel=cancel,
                set_ref=set_ref,
                fresh=fresh,
                full_disk=full_disk,
            )

    @contextmanager
    def _one_at_a_time(
        self, repo_id: str, on_event: EventListener | None, cancel: CancelToken | None
    ) -> Iterator[None]:
        lock = self.cache.model_lock(repo_id)  # in the cache: every process using it sees it (system.locks)
        if not lock.acquire(timeout=0):
            if on_event is not None:
                on_event(
                    DownloadEvent(
                        DownloadEventKind.WAITING,
                        repo_id,
                        "",
                        None,
                        0,
                        0,
                        0.0,
                        None,
                        detail="another download of this model is running; waiting for it",
                    )
                )
            while not lock.acquire(timeout=0.25):
                if cancel is not None and cancel.cancelled:
                    raise GenerationCancelledError(
                        f"download of {repo_id} cancelled", phase="download", steps_completed=0
                    ) from None
        try:
            yield
        finally:
            lock.release()

    def _download(
        self,
        repo_id: str,
        revision: str,
        *,
        manifest: RevisionManifest | None,
        files: Iterable[str] | None,
        on_event: EventListener | None,
        cancel: CancelToken | None,
        set_ref: bool,
        fresh: bool,
        full_disk: FullDiskChoice,
    ) -> DownloadResult:
        started = self.clock()
        manifest = manifest or self.remote_manifest(repo_id, revision)
        wanted = set(files) if files is not None else None
        entries = [e for e in manifest.files if wanted is None or e.path in wanted]
        todo = [e for e in entries if fresh or not self._blob_ok(repo_id, e)]
        # A ``fresh`` re-fetch still resumes a partial file of the blob (a repair killed midway): its bytes came from
        # the blob's own URL, and the hash checked before the move throws away one that is not right.
        kept = self.cache.partial_bytes(repo_id)
        resumed = sum(min(kept.get(e.blob_name, 0), e.size) for e in todo)
        transfer = _Transfer(self, manifest, sum(e.size for e in todo), resumed, on_event)
        transfer.emit(DownloadEventKind.STARTED, detail=f"{len(todo)} of {len(entries)} files to fetch")
        retries = 0
        for entry in todo:
            transfer.path = entry.path
            try:
                retries += self._with_retries(
                    partial(self._fetch_blob, manifest, entry, transfer, cancel),
                    repo_id,
                    revision,
                    (entry.path,),
                    transfer,
                )[1]
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise
                raise self._disk_full(manifest, entry, todo, full_disk) from exc
            transfer.emit(DownloadEventKind.FILE_DONE)
        for entry in entries:
            self.cache.link(repo_id, manifest.commit, entry)
        self.cache.save_manifest(manifest)
        if set_ref and not is_commit_hash(revision):
            self.cache.set_ref(repo_id, revision, manifest.commit)
        transfer.path = None
        transfer.emit(DownloadEventKind.COMPLETED)
        return DownloadResult(
            repo_id,
            revision,
            manifest.commit,
            self.cache.snapshot_dir(repo_id, manifest.commit),
            tuple(e.path for e in todo),
            transfer.transferred,
            resumed,
            self.clock() - started,
            retries,
            transfer.slow,
        )

    def _disk_full(
        self, manifest: RevisionManifest, entry: ManifestEntry, todo: list[ManifestEntry], full_disk: FullDiskChoice
    ) -> StorageFullError:
        """The disk filled up while ``entry`` was written: keep or remove this download's partial blobs (never a
        finished blob), then say what is needed, what is free and what would make room."""
        partials = [self.cache.incomplete_path(manifest.repo_id, e.blob_name) for e in todo]
        kept = sum(p.stat().st_size for p in partials if p.is_file())
        if full_disk == "remove":
            for path in partials:
                path.unlink(missing_ok=True)
            fate = f"the {format_bytes(kept)} downloaded so far were deleted, as asked"
        else:
            fate = f"the {format_bytes(kept)} downloaded so far are kept: the download resumes there when space is free"
        report = preflight(self.cache, manifest, 0)
        return StorageFullError(
            f"the disk filled up while downloading {manifest.repo_id}/{entry.path}: {report.describe()}; {fate}",
            path=str(self.cache.cache_dir),
            bytes_needed=report.bytes_needed,
            bytes_free=report.bytes_free,
            plan=report.plan,
        )

    def _blob_ok(self, repo_id: str, entry: ManifestEntry) -> bool:
        blob = self.cache.blob_path(repo_id, entry.blob_name)
        return blob.is_file() and blob.stat().st_size == entry.size

    def _fetch_blob(
        self, manifest: RevisionManifest, entry: ManifestEntry, transfer: _Transfer, cancel: CancelToken | None
    ) -> int:
        """One attempt at one blob: resume its ``.incomplete``, check size and hash, move it into place."""
        repo_id = manifest.repo_id
        incomplete = self.cache.incomplete_path(repo_id, entry.blob_name)
        incomplete.parent.mkdir(parents=True, exist_ok=True)
        if incomplete.is_file() and incomplete.stat().st_size > entry.size:
            incomplete.unlink()
        resume = incomplete.stat().st_size if incomplete.is_file() else 0
        url = hf_hub_url(repo_id, entry.path, revision=manifest.commit, endpoint=self.endpoint)
        with incomplete.open("ab") as raw:
            http_get(
                url,
                _ProgressFile(raw, transfer, cancel),  # type: ignore[arg-type]  # file-like: write, seek, truncate
                resume_size=resume,
                headers=build_hf_headers(token=self.token),
                expected_size=entry.size,
                displayed_filename=entry.path,
                tqdm_class=silent_tqdm,
            )
        actual = hash_blob(incomplete, entry)
        expected = entry.sha256 or entry.blob_id
        if actual != expected:
            incomplete.unlink(missing_ok=True)
            transfer.done -= entry.size
            raise IntegrityError(
                f"{repo_id}/{entry.path}: downloaded content hashes to {actual}, not {expected}",
                model_id=repo_id,
                files=[entry.path],
                expected=expected,
                actual=actual,
            )
        os.replace(incomplete, self.cache.blob_path(repo_id, entry.blob_name))
        return resume

    def _with_retries(
        self, call: Callable[[], T], repo_id: str, revision: str, files: tuple[str, ...], transfer: _Transfer | None
    ) -> tuple[T, int]:
        """Run ``call`` with backoff on transient errors; return its value and the number of retries."""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call(), attempt - 1
            except Exception as exc:
                delay = retry_delay_for(exc, attempt, self.retry)
                if delay is None or attempt == self.retry.attempts:
                    typed = self._typed(exc, repo_id, revision, files)
                    if typed is exc:
                        raise
                    raise typed from exc
                if transfer is not None:
                    transfer.emit(DownloadEventKind.RETRY, attempt=attempt, detail=f"{type(exc).__name__}: {exc}")
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _typed(self, exc: Exception, repo_id: str, revision: str, files: tuple[str, ...]) -> Exception:
        """The error the recovery layer should see for a failure that retrying did not fix."""
        if isinstance(exc, GatedRepoError):
            steps = access_steps(repo_id)
            return ModelAccessError(
                f"{repo_id} is gated: access must be granted first. " + " ".join(steps),
                model_id=repo_id,
                reason="gated",
                steps=steps,
            )
        if isinstance(exc, RevisionNotFoundError):
            return ModelVersionError(
                f"{repo_id} has no revision {revision!r}", model_id=repo_id, expected=revision, found=None
            )
        if isinstance(exc, (OfflineModeIsEnabled, httpx2.ConnectError)):
            return NetworkUnavailableError(
                f"cannot reach the model hub for {repo_id}: {exc}", endpoint=self.endpoint, reason=type(exc).__name__
            )
        if isinstance(exc, HfHubHTTPError) and not isinstance(exc, (RepositoryNotFoundError, EntryNotFoundError)):
            status = exc.response.status_code if exc.response is not None else None
            return ModelDownloadError(
                f"{repo_id}: hub answered {status} for {', '.join(files) or 'metadata'}",
                model_id=repo_id,
                files=list(files),
                status=status,
                retryable=status in _TRANSIENT_STATUS,
            )
        if isinstance(exc, _TRANSIENT_NETWORK):
            return ModelDownloadError(
                f"{repo_id}: transfer of {', '.join(files) or 'metadata'} kept failing ({exc})",
                model_id=repo_id,
                files=list(files),
                status=None,
                retryable=True,
            )
        return exc
