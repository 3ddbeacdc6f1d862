"""The store's lock files after kill -9: never blocking the next run; a dead owner's lock is taken over by pid."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from components.system.locks import ModelLock, lock_owner


def _holder(path: Path, *, orphan: bool) -> tuple[int, int | None]:
    """Fork a process that takes the lock (and, with ``orphan``, forks a child that inherits the locked descriptor
    and outlives it), then SIGKILL it; returns the dead owner's pid and the orphan's."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the owner
        try:
            os.close(ready_r)
            assert ModelLock(path).acquire(timeout=5)
            kept = os.fork() if orphan else 1
            if kept == 0:  # the orphan: holds the inherited flock, does nothing
                time.sleep(60)
                os._exit(0)
            os.write(ready_w, f"{kept if orphan else 0}\n".encode())
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(ready_w)
    with os.fdopen(ready_r) as ready:
        orphan_pid = int(ready.readline()) or None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return pid, orphan_pid


def test_lock_of_a_killed_owner_is_free_and_names_the_dead_owner(tmp_path: Path) -> None:
    """kill -9 of the holder: the next run takes the lock at once and knows which pid died holding it."""
    path = tmp_path / "model.lock"
    dead, _ = _holder(path, orphan=False)
    assert lock_owner(path) == dead
    lock = ModelLock(path)
    assert lock.acquire(timeout=0)
    try:
        assert lock.took_over == dead
        assert lock_owner(path) == os.getpid()
    finally:
        lock.release()
    assert lock_owner(path) is None  # a clean release leaves no pid to be taken for a dead owner


def test_lock_still_held_for_a_dead_owner_is_broken_and_taken_over(tmp_path: Path) -> None:
    """An orphan that inherited the locked descriptor keeps the flock after its owner was killed: the recorded
    owner's pid is dead, so the lock is stale and the next run takes it over."""
    path = tmp_path / "model.lock"
    dead, orphan = _holder(path, orphan=True)
    assert orphan is not None
    try:
        lock = ModelLock(path)
        assert lock.acquire(timeout=5)
        assert lock.took_over == dead  # on a new lock file: the stale one was unlinked from under the orphan
        assert lock_owner(path) == os.getpid()
        lock.release()
    finally:
        os.kill(orphan, signal.SIGKILL)  # not our child (re-parented when its parent died): nothing to reap
    assert dead != orphan


def test_lock_of_a_live_owner_in_another_process_is_not_taken(tmp_path: Path) -> None:
    """A holder that runs keeps its lock: the other process waits (here: gives up after 0.2 s)."""
    path = tmp_path / "model.lock"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ModelLock(path).acquire(timeout=5)
            os.write(ready_w, b"1")
            time.sleep(60)
        finally:
            os._exit(1)
    os.read(ready_r, 1)
    try:
        assert not ModelLock(path).acquire(timeout=0.2)
        assert lock_owner(path) == pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    lock = ModelLock(path)
    assert lock.acquire(timeout=0)
    lock.release()
