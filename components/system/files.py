"""Files on disk, done one way everywhere: written beside their final name and renamed into place (a reader never
sees half a file), and hashed in one streaming pass (sha256, and git's blob id as the hub names small files).

    write_text_atomic(path, json.dumps(state))
    with replacing(path) as partial:              # write ``partial`` (a file, a symlink or a folder), then it
        writer.save(partial)                      # replaces ``path``; on an error it is removed, ``path`` untouched
    hash_file(path, "sha256", "git")              # {"sha256": ..., "git": ...}
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

__all__ = ["HashName", "git_blob_id", "hash_file", "partial_path", "replacing", "write_text_atomic"]

HashName = Literal["sha256", "git"]
_BUFFER = 4 * 1024 * 1024


def partial_path(path: Path) -> Path:
    """A unique hidden sibling of ``path`` to write into; it keeps ``path``'s suffix (an mp4 writer picks its
    container from it) and says ``incomplete``."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.incomplete{path.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a partial path beside ``path``; when the block ends normally whatever was written there replaces
    ``path`` in one rename (a folder replaces a folder: the old one is removed first), and when it raises the partial
    is removed and ``path`` is left as it was (a ``kill -9`` leaves the hidden partial beside it, never a mix)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    try:
        yield partial
        if partial.is_dir() and not partial.is_symlink() and target.is_dir() and not target.is_symlink():
            # The old folder leaves in one rename and the new one arrives in another: a process killed between
            # them leaves no folder under the name (rebuilt on demand), never a half-removed one.
            aside = partial_path(target)
            os.replace(target, aside)
            try:
                os.replace(partial, target)
            except OSError:
                os.replace(aside, target)
                raise
            _remove(aside)
        else:
            os.replace(partial, target)
    finally:
        _remove(partial)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old content or the new, never a mix."""
    with replacing(path) as partial:
        partial.write_text(text, encoding="utf-8")


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content (what the hub names a non-LFS file by)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hash_file(
    path: str | os.PathLike[str], *names: HashName, on_bytes: Callable[[int], None] | None = None
) -> dict[HashName, str]:
    """The named hashes of a file in one streaming pass: ``sha256`` (the hub's name for an LFS blob) and ``git``
    (the git blob id, the hub's name for a small file); ``on_bytes(n)`` after each chunk read."""
    file = Path(path)
    digests: dict[HashName, hashlib._Hash] = {}
    for name in names or ("sha256",):
        digests[name] = hashlib.sha256() if name == "sha256" else hashlib.sha1(b"blob %d\0" % file.stat().st_size)
    buffer = bytearray(_BUFFER)
    view = memoryview(buffer)
    with file.open("rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            for digest in digests.values():
                digest.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return {name: digest.hexdigest() for name, digest in digests.items()}
