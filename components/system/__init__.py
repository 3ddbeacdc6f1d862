"""Helpers every sub-system shares: files written atomically and hashed one way."""

from components.system.files import git_blob_id, hash_file, partial_path, replacing, write_text_atomic

__all__ = ["git_blob_id", "hash_file", "partial_path", "replacing", "write_text_atomic"]
