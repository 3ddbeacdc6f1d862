"""A real small filesystem to fill: a tmpfs mounted for one test (root only), and a writer that fills it.

The full-disk tests produce ``ENOSPC`` for real (the kernel refuses the write), not by a setting; where a tmpfs
cannot be mounted (not root, no ``mount``), the test is skipped saying so.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["fill", "small_disk"]

_CHUNK = 64 * 1024


@contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``where`` (created) for the block; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs, and mounting one needs root (not root here)")
    if shutil.which("mount") is None:
        pytest.skip("a real full disk needs a tmpfs, and `mount` is not installed here")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"a real full disk needs a tmpfs, which cannot be mounted here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(disk: Path, *, leave: int = 0, name: str = "other-writer.bin") -> Path:
    """Another writer: write ``disk/name`` until the kernel answers ENOSPC, then give ``leave`` bytes back."""
    filler = disk / name
    with filler.open("ab", buffering=0) as f:
        while True:
            try:
                if f.write(b"\xa5" * _CHUNK) == 0:
                    break
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    if leave:
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave))
    return filler
