"""Helpers every sub-system shares: files written atomically and hashed one way, locks across processes."""

from components.system.files import git_blob_id, hash_file, partial_path, replacing, write_text_atomic
from components.system.locks import ModelLock, claim_unused, exclusive, lock_owner, pid_alive, using

__all__ = [
    "ModelLock",
    "claim_unused",
    "exclusive",
    "git_blob_id",
    "hash_file",
    "lock_owner",
    "partial_path",
    "pid_alive",
    "replacing",
    "using",
    "write_text_atomic",
]
