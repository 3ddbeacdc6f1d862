"""Cross-process locks on one model of the hub cache: the writer's lock and the readers' "in use" mark.

Both are ``flock`` locks on small files under ``<cache>/.locks/kintsugi/`` (beside the hub's own ``.locks``), so two
app processes sharing one cache see each other, whatever their data folders, and a process killed with ``kill -9``
releases them with its last file descriptor.

- ``ModelLock`` (``<folder>.lock``): one writer of a model at a time (download, repair, update, clean-up). Re-entrant
  within a thread (an update holds it and calls the download, which takes it again). The owner's pid is written
  into the file while it is held and cleared on release, so a pid found there at acquisition names an owner that
  died holding it (``took_over``). A lock still held while its recorded owner is dead (an orphaned child kept the
  inherited descriptor) is stale: it is broken (the file unlinked, under a guard) and taken over.
- ``using`` (``<folder>.use``): a shared mark a generation holds while it reads a model; ``claim_unused`` takes it
  exclusively without waiting, so a clean-up never deletes a model another process is reading.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelLock", "claim_unused", "exclusive", "lock_owner", "pid_alive", "using"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (signal 0 delivers nothing; EPERM means it runs as another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(path: Path) -> int | None:
    """The pid recorded in a lock file (None when it is empty, unreadable or missing)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec: a spawned child never inherits it


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """The descriptor still is the file at ``path`` (a stale lock broken meanwhile gives a new file there)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


@dataclass
class _Held:
    """This process's hold on one lock file: threads queue on ``rlock``, the flock is taken once."""

    rlock: threading.RLock = field(default_factory=threading.RLock)
    fd: int | None = None
    depth: int = 0


_registry_lock = threading.Lock()
_registry: dict[str, _Held] = {}


def _slot(path: Path) -> _Held:
    with _registry_lock:
        return _registry.setdefault(str(path.absolute()), _Held())


class ModelLock:
    """The writer's lock on one model (see the module docstring); ``acquire`` then ``release``, or ``with``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.took_over: int | None = None  # pid of a dead owner whose lock this acquisition took over
        self._broken_from: int | None = None

    def acquire(self, timeout: float | None = None, *, poll_s: float = 0.05) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (None: for ever, 0: not at all); False when busy."""
        deadline = None if timeout is None else time.monotonic() + timeout
        slot = _slot(self.path)
        if not slot.rlock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        if slot.depth:
            slot.depth += 1
            return True
        try:
            fd = self._flock(deadline, poll_s)
        except BaseException:
            slot.rlock.release()
            raise
        if fd is None:
            slot.rlock.release()
            return False
        left_by = _read_pid(fd) or self._broken_from
        self.took_over = left_by if left_by is not None and left_by != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        slot.fd, slot.depth = fd, 1
        return True

    def _flock(self, deadline: float | None, poll_s: float) -> int | None:
        self._broken_from = None
        while True:
            fd = _open(self.path)
            if _try_flock(fd, fcntl.LOCK_EX):
                if _same_file(fd, self.path):
                    return fd
                os.close(fd)  # locked a file that was broken away meanwhile: lock the new one
                continue
            owner = _read_pid(fd)
            if owner is not None and owner != os.getpid() and not pid_alive(owner):
                self._break(fd)
                self._broken_from = owner
                os.close(fd)
                continue
            os.close(fd)
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll_s)

    def _break(self, stale_fd: int) -> None:
        """Unlink a lock file held on behalf of a dead owner, once, whoever else is breaking it too."""
        guard = _open(self.path.with_name(self.path.name + ".break"))
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if _same_file(stale_fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(guard)

    def release(self) -> None:
        slot = _slot(self.path)
        slot.depth -= 1
        if slot.depth == 0 and slot.fd is not None:
            os.ftruncate(slot.fd, 0)  # a clean release: no pid left to be mistaken for a dead owner
            fcntl.flock(slot.fd, fcntl.LOCK_UN)
            os.close(slot.fd)
            slot.fd = None
        slot.rlock.release()

    @property
    def held(self) -> bool:
        """Whether this process holds it now."""
        return _slot(self.path).depth > 0

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def using(path: Path) -> Iterator[None]:
    """Hold the shared "in use" mark at ``path`` (waits only while a clean-up deletes that model)."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def claim_unused(path: Path) -> Iterator[bool]:
    """Take the "in use" mark at ``path`` exclusively without waiting; yields False when a reader holds it."""
    fd = _open(path)
    try:
        yield _try_flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """A short exclusive section across processes (a read-modify-write of one small file); ``path`` is a lock file,
    or an existing folder, which is then locked itself (nothing is created in it)."""
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
