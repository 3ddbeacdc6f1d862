"""kill -9 during store actions: a runner that forks each action into a child and kills it, and an audit of the cache.

Fault-harness equipment (tests and ``bench/bench_store_soak.py``), not product path. ``KillRunner`` starts one
helper process (``python -m components.chaos.store_kills``) that imports the store once and then, per request,
forks a child that runs one store action — download, repair, update, rollback, clean-up, install of a local model,
the tiny model's build, or holding a model in use — against a cache and a (loopback) hub. The helper sends the
child ``SIGKILL`` after ``kill_after`` seconds unless it finished first, so the kill lands at a random point of the
action and the pid is never a reused one. Every child builds a fresh ``ModelStore``: it is the restart.

``audit`` reads the cache as a user would after the restart: every revision the store reports verified passes a full
check; no file under a final name is half-written (each blob hashes to its name, no link points at nothing, no
ref names a missing snapshot); the refs are at commits the caller allows; no lock is left that blocks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ActionOutcome", "KillRunner", "StoreAudit", "audit"]


@dataclass(frozen=True)
class ActionOutcome:
    """How one forked action ended: ``killed`` (SIGKILL sent while it ran) or its exit code."""

    killed: bool
    returncode: int
    seconds: float


@dataclass(frozen=True)
class StoreAudit:
    """What a cache holds after kills; every list is empty for a sound cache."""

    verified_failing: tuple[str, ...]  # "repo@commit" reported verified whose full check fails
    corrupt_blobs: tuple[str, ...]  # blobs under their final name whose content does not hash to it
    dangling_links: tuple[str, ...]  # snapshot entries pointing at no blob
    bad_refs: tuple[str, ...]  # refs at a commit not allowed, or at a missing snapshot
    stuck_locks: tuple[str, ...]  # lock files that cannot be taken now
    stale_owners: tuple[int, ...] = field(default=())  # pids of dead owners whose lock was taken over by the audit
    refs: dict[str, str] = field(default_factory=dict)  # "repo:ref" -> commit

    @property
    def ok(self) -> bool:
        return not (
            self.verified_failing or self.corrupt_blobs or self.dangling_links or self.bad_refs or self.stuck_locks
        )

    @property
    def corrupt_files(self) -> int:
        return len(self.verified_failing) + len(self.corrupt_blobs) + len(self.dangling_links) + len(self.bad_refs)


def audit(cache_dir: Path, state_dir: Path, allowed: dict[str, set[str]] | None = None) -> StoreAudit:
    """Check a cache after kills (see the module docstring); ``allowed`` maps a repo to the commits its refs may
    name (an interrupted update: the old one or the new one)."""
    from components.store.cache import HubCache, ManifestEntry
    from components.store.integrity import full_check, hash_blob
    from components.system.locks import ModelLock

    cache = HubCache(cache_dir, state_dir)
    verified_failing, corrupt, dangling, bad_refs, stuck, stale = [], [], [], [], [], []
    refs: dict[str, str] = {}
    for repo_id in cache.cached_repos():
        repo_dir = cache.repo_dir(repo_id)
        for blob in sorted((repo_dir / "blobs").glob("*")) if (repo_dir / "blobs").is_dir() else ():
            if blob.name.startswith(".") or blob.name.endswith(".incomplete"):
                continue  # a partial beside its name, or a download kept for resuming: not under a final name
            lfs = len(blob.name) == 64  # the hub names LFS blobs by sha256, small files by their git blob id
            entry = ManifestEntry("", blob.stat().st_size, blob.name, blob.name if lfs else None)
            if hash_blob(blob, entry) != blob.name:
                corrupt.append(f"{repo_id}/blobs/{blob.name}")
        for commit in cache.snapshot_commits(repo_id):
            snapshot = cache.snapshot_dir(repo_id, commit)
            for link in sorted(snapshot.rglob("*")):
                if link.is_symlink() and not link.exists() and not link.name.startswith("."):
                    dangling.append(f"{repo_id}@{commit[:8]}/{link.relative_to(snapshot)}")
            manifest = cache.manifest(repo_id, commit)
            if manifest is not None and cache.is_verified(manifest) and not full_check(cache, manifest).ok:
                verified_failing.append(f"{repo_id}@{commit}")
        for ref in sorted((repo_dir / "refs").glob("*")) if (repo_dir / "refs").is_dir() else ():
            if ref.name.startswith("."):
                continue
            commit = ref.read_text().strip()
            refs[f"{repo_id}:{ref.name}"] = commit
            wanted = (allowed or {}).get(repo_id)
            if not cache.snapshot_dir(repo_id, commit).is_dir() or (wanted is not None and commit not in wanted):
                bad_refs.append(f"{repo_id}:{ref.name}={commit}")
    for path in sorted(cache.locks_dir.glob("*.lock")) if cache.locks_dir.is_dir() else ():
        lock = ModelLock(path)
        if lock.acquire(timeout=0):
            if lock.took_over is not None:
                stale.append(lock.took_over)
            lock.release()
        else:
            stuck.append(path.name)
    return StoreAudit(
        tuple(verified_failing),
        tuple(corrupt),
        tuple(dangling),
        tuple(bad_refs),
        tuple(stuck),
        tuple(stale),
        refs,
    )


class KillRunner:
    """One helper process that forks store actions and kills them; use as a context manager.

    ``run(spec, kill_after=None)`` runs ``spec`` (a dict: ``action`` plus its arguments, see ``_act``) in a fresh
    child; with ``kill_after`` seconds the child is killed with SIGKILL then unless it ended first.
    ``warm=("build",)`` also imports the tiny model builder before the first fork (seconds, once).
    """

    def __init__(self, *, warm: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.warm, self.env = warm, env
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> KillRunner:
        root = Path(__file__).resolve().parents[2]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "components.chaos.store_kills", *self.warm],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(self.env or {})},
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"store kill helper did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def run(self, spec: dict[str, Any], kill_after: float | None = None, *, timeout: float = 120.0) -> ActionOutcome:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"spec": spec, "kill_after": kill_after, "timeout": timeout}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("store kill helper exited")
        answer = json.loads(line)
        return ActionOutcome(answer["killed"], answer["rc"], answer["seconds"])

    def start(self, spec: dict[str, Any], *, timeout: float = 120.0) -> int:
        """Fork ``spec`` without waiting; returns the child's pid (end it with ``kill`` or wait with ``join``)."""
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"spec": spec, "background": True, "timeout": timeout}) + "\n")
        self._proc.stdin.flush()
        return int(json.loads(self._proc.stdout.readline())["pid"])

    def kill(self, pid: int) -> ActionOutcome:
        """SIGKILL a child started with ``start`` (if it still runs) and reap it."""
        return self._finish(pid, kill=True)

    def join(self, pid: int) -> ActionOutcome:
        """Wait for a child started with ``start`` to end by itself."""
        return self._finish(pid, kill=False)

    def _finish(self, pid: int, *, kill: bool) -> ActionOutcome:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"finish": pid, "kill": kill}) + "\n")
        self._proc.stdin.flush()
        answer = json.loads(self._proc.stdout.readline())
        return ActionOutcome(answer["killed"], answer["rc"], answer["seconds"])


# -- the helper process ----------------------------------------------------------------------------------------
def _configure_client() -> None:
    """Small chunks (a kill lands inside a file), short timeouts, no Xet: the loopback hub's client settings."""
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = 16 * 1024
    constants.HF_HUB_DOWNLOAD_TIMEOUT = 5
    constants.HF_HUB_ETAG_TIMEOUT = 5
    constants.HF_HUB_DISABLE_XET = True
    constants.HF_HUB_OFFLINE = False


def _act(spec: dict[str, Any]) -> None:
    """Run one store action in this (child) process; raises on failure."""
    from components.store.disk import apply_cleanup, plan_cleanup
    from components.store.download import RetryPolicy
    from components.store.model_store import ModelStore

    action = spec["action"]
    if action == "build":
        from components.generation.embedded_model import build_tiny_model

        build_tiny_model(spec["model_id"], spec["target"])
        return
    store = ModelStore(
        spec["cache"],
        spec["state"],
        endpoint=spec.get("endpoint"),
        token=False,
        retry=RetryPolicy(attempts=3, base_s=0.0),
        reserve_bytes=0,
    )
    repo = spec["repo"]
    if action == "download":
        store.download(repo)
    elif action == "ensure":
        store.ensure(repo)
    elif action == "repair":
        report = store.health.repair(repo)
        if not report.ok:
            raise RuntimeError(f"repair failed: {report.detail}")
    elif action == "open":  # a restart and nothing else: what the last process left is settled
        pass
    elif action == "update":
        seconds = float(spec.get("validate_seconds", 0))
        store.versions.update(repo, validate=(lambda _folder: time.sleep(seconds)) if seconds else None)
    elif action == "rollback":
        store.versions.rollback(repo)
    elif action == "cleanup":
        plan = plan_cleanup(store.cache, int(spec.get("bytes", 1 << 62)), keep=spec.get("keep", ()))
        apply_cleanup(plan)
    elif action == "install":
        source = Path(spec["source"])
        store.register_local_source(repo, lambda target: Path(shutil.copytree(source, target)))
    elif action == "hold":  # a generation's part: the model marked in use, made usable, its files read
        with store.using(repo):
            folder = store.ensure(repo)
            for path in sorted(folder.rglob("*.safetensors")):
                path.read_bytes()
            Path(spec["ready_file"]).write_text(str(os.getpid()))
            time.sleep(float(spec.get("seconds", 60)))
    else:
        raise ValueError(f"unknown action {action!r}")


def _fork(spec: dict[str, Any]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: run, then leave without running the parent's cleanup handlers
        code = 0
        try:
            _act(spec)
        except BaseException as exc:  # the outcome is reported through the exit code and stderr
            sys.stderr.write(f"{spec['action']}: {type(exc).__name__}: {exc}\n")
            code = 1
        sys.stderr.flush()
        os._exit(code)
    return pid


def _wait(pid: int, started: float, kill_after: float | None, timeout: float) -> dict[str, Any]:
    """Wait for a child, SIGKILL it at ``kill_after`` (or at ``timeout``); reaping happens here, so no pid reuse."""
    killed = False
    limit = timeout if kill_after is None else min(kill_after, timeout)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started >= limit:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed, status = True, -signal.SIGKILL
            break
        time.sleep(0.002)
    rc = -signal.SIGKILL if killed else os.waitstatus_to_exitcode(status)
    return {"killed": killed, "rc": rc, "seconds": time.monotonic() - started}


def _serve(warm: list[str]) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ["HF_HUB_DISABLE_XET"] = "1"

    _configure_client()
    if "build" in warm:  # one build of the default tiny pipeline loads every module a build needs (~15 s, once)
        import torch

        from components.generation.embedded_model import EMBEDDED_MODEL_ID
        from components.generation.families import FAMILIES

        torch.set_num_threads(1)  # no intra-op thread pool in the parent: a forked child could not use it
        torch.set_num_interop_threads(1)
        next(f for f in FAMILIES if f.tiny_model_id == EMBEDDED_MODEL_ID).build_tiny()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    background: dict[int, float] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "finish" in request:
            pid = int(request["finish"])
            started = background.pop(pid)
            answer = _wait(pid, started, 0.0 if request["kill"] else None, 600.0)
        elif request.get("background"):
            pid = _fork(request["spec"])
            background[pid] = time.monotonic()
            answer = {"pid": pid}
        else:
            started = time.monotonic()
            answer = _wait(_fork(request["spec"]), started, request.get("kill_after"), float(request["timeout"]))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    os._exit(0)  # the caller is done; skip the interpreter's (torch's) slow teardown


if __name__ == "__main__":
    _serve(sys.argv[1:])
