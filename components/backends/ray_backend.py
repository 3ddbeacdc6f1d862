"""The Ray backend: one replica per GPU, each a Ray actor holding a warm ``VideoGenerator``, presented to the service
as one ``WorkerBackend`` (``ReplicaPool``).

Why plain actors and not Ray's own retries: our recovery engine decides what a failure means and what to try next
(another replica, smaller settings, another model), so Ray must never re-run a job silently — replicas are
created with ``max_restarts=0`` and ``max_task_retries=0``, and a dead one is replaced here. Each replica runs the
worker process's own job code (``components.generation.worker``'s memory cap, precision probe, progress callbacks
and exception chain), streaming its events back through a Ray streaming generator; a cancel is the product's own
flag set by a second, concurrent actor method (``ray.cancel`` does not interrupt a running task), and a load that
exceeds its time is ended with ``ray.kill``.

Errors are translated at the boundary (``translate_ray_error``), so the classifier in ``recovery/`` never sees a
Ray type: a dead actor or node is our ``WorkerCrashedError`` (the engine retries on another replica), Ray's memory
monitor killing a replica is the same error saying so (it is machine-wide memory, not our allocator's
``OutOfMemoryError`` — the names clash), and ``RayTaskError(X)`` is ``X``.

Ray is imported only when this backend is chosen (``KINTSUGI_BACKEND=ray``); without the extra, ``import_ray``
says which one to install.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from components.generation.worker import JobHost, WorkerConfig, WorkerEvent, rebuild_chain
from recovery.errors import (
    DependencyMissingError,
    GenerationCancelledError,
    KintsugiError,
    ModelLoadTimeoutError,
    WorkerCrashedError,
    WorkerStartError,
)

__all__ = ["RAY_EXTRA", "RayReplica", "ReplicaPool", "ReplicaRuntime", "connect", "import_ray", "translate_ray_error"]

log = logging.getLogger(__name__)
RAY_EXTRA = "pip install kintsugi-video[ray]"
_POLL_S = 0.1
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def import_ray() -> Any:
    """The ``ray`` module, or ``DependencyMissingError`` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise DependencyMissingError(
            f"KINTSUGI_BACKEND=ray needs Ray, which is not installed: {RAY_EXTRA}", package="ray", install=RAY_EXTRA
        ) from exc
    return ray


def connect(
    address: str | None = None,
    *,
    logical_gpus: int | None = None,
    num_cpus: int | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:port``) or, without one, start a local instance
    that keeps every socket on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: without it Ray rewrites the
    loopback address to the machine's outbound one), with no dashboard, its session files under ``temp_dir`` and
    ``logical_gpus`` declared where the machine has none (so one replica per declared GPU runs on a CPU). Returns
    whether this call started Ray (then the caller shuts it down); ``False`` when it already ran."""
    if address is None:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for Ray's own processes, which import it afresh
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is None:  # and for this one: Ray reads the switch once, when imported (here perhaps long ago)
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return True
    ray.init(
        num_gpus=logical_gpus,
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=None if temp_dir is None else os.fspath(temp_dir),
        # the replicas import ``components`` by name: on this machine they find it where the app runs from
        runtime_env={
            "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")]))}
        },
        log_to_driver=False,
        configure_logging=False,
    )
    return True


def translate_ray_error(exc: BaseException, *, phase: str, replica: str) -> BaseException:
    """The product's error for what Ray raised while ``replica`` ran ``phase``: a dead actor, worker or node →
    ``WorkerCrashedError`` (the engine retries, on another replica); Ray's memory monitor → the same, saying the
    machine ran low on memory; ``RayTaskError(X)`` → ``X``; anything else unchanged."""
    exceptions = import_ray().exceptions
    if isinstance(exc, exceptions.OutOfMemoryError):  # Ray's, not ours: the node's memory, not the replica's cap
        return WorkerCrashedError(
            f"Ray's memory monitor stopped {replica} during {phase}: the machine it runs on was low on memory",
            signal_name="SIGKILL",
            phase=phase,
        )
    if isinstance(exc, exceptions.RayActorError | exceptions.WorkerCrashedError | exceptions.NodeDiedError):
        return WorkerCrashedError(f"{replica} stopped unexpectedly during {phase}", phase=phase)
    if isinstance(exc, exceptions.ObjectLostError):  # its node went away with the result
        return WorkerCrashedError(f"{replica} was lost during {phase} (its node went away)", phase=phase)
    if isinstance(exc, exceptions.RayTaskError):
        cause = exc.cause
        return cause if isinstance(cause, BaseException) else exc
    return exc


# --------------------------------------------------------------------------------------------------------------
# Inside the replica (a Ray actor)
# --------------------------------------------------------------------------------------------------------------
class ReplicaRuntime:
    """One replica's body: a warm ``VideoGenerator`` under the worker's memory cap. Wrapped with ``ray.remote`` by
    ``ReplicaPool`` (Ray stays out of this module's imports); ``max_concurrency=2`` lets ``cancel`` run while
    ``generate`` streams."""

    def __init__(self, config: dict[str, Any], threads: int | None = None) -> None:
        # One flag per job: the tail of a finished job's stream may still run when the next job starts here.
        self._cancels: dict[str, threading.Event] = {}
        self._job_lock = threading.Lock()  # one job at a time on the pipeline, its memory release included
        import torch
        from diffusers.utils import logging as diffusers_logging

        if threads:
            torch.set_num_threads(threads)
        diffusers_logging.disable_progress_bar()
        self.host = JobHost(WorkerConfig(**config))  # the worker process's own job code

    def ready(self) -> tuple[str, Any]:
        return ("error", self.host.failure) if self.host.failure is not None else ("ready", self.host.info)

    def stats(self) -> dict[str, Any]:
        return self.host.stats()

    def cancel(self, job_id: str) -> None:
        """Stop job ``job_id`` (``""``: whatever runs) at its next step; a late cancel for another job is dropped."""
        for running, flag in list(self._cancels.items()):
            if job_id in ("", running):
                flag.set()

    def generate(self, job_id: str, payload: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
        """Run one job, yielding the worker's messages: ``phase``/``progress`` as they happen, then ``result`` (the
        output as a dict) or ``error`` (the pickled exception chain)."""
        events: queue.Queue[tuple[str, str, Any] | None] = queue.Queue()
        cancelled = self._cancels[job_id] = threading.Event()

        def work() -> None:
            with self._job_lock:
                result = self.host.run(job_id, payload, events.put, cancelled.is_set)
                events.put(result)
                if result[0] == "error":
                    self.host.release()
            events.put(None)

        thread = threading.Thread(target=work, name=f"job-{job_id}", daemon=True)
        thread.start()
        try:
            while (item := events.get()) is not None:
                yield item
        finally:
            cancelled.set()  # the app stopped reading: stop the job too
            thread.join()
            self._cancels.pop(job_id, None)


# --------------------------------------------------------------------------------------------------------------
# In the app
# --------------------------------------------------------------------------------------------------------------
class RayReplica:
    """The app's handle on one replica actor, with the ``Worker``'s contract: one job at a time, typed errors, a
    dead actor replaced by a fresh one before the error is raised."""

    def __init__(self, name: str, actor_class: Any, config: WorkerConfig, threads: int | None = None) -> None:
        self.name, self.config, self.threads = name, config, threads
        self._actor_class = actor_class
        self._actor: Any = None
        self._ready: Any = None  # the actor's ``ready`` answer, awaited by the first job
        self._lock = threading.Lock()
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self.jobs_run = 0
        self.loaded_model: str | None = None  # the model the last finished job left warm
        self._job_id: str | None = None

    @property
    def job_id(self) -> str | None:
        return self._job_id

    def start(self) -> None:
        """Create the actor without waiting for it (its imports and Ray's scheduling take seconds)."""
        if self._actor is None:
            self._actor = self._actor_class.options(runtime_env={"env_vars": _replica_environment()}).remote(
                asdict(self.config), self.threads
            )
            self._ready = self._actor.ready.remote()  # answered once the actor has imported and capped itself
            self.info = {}

    @property
    def started(self) -> bool:
        """Up and answering (not a fresh actor still importing): what dispatch prefers after a warm replica."""
        if self.info:
            return True
        if self._actor is None:
            return False
        done, _ = import_ray().wait([self._ready], timeout=0)
        return bool(done)

    def _discard(self) -> None:
        if self._actor is not None:
            try:
                import_ray().kill(self._actor, no_restart=True)
            except Exception:  # already gone
                pass
        self._actor, self.info, self.loaded_model = None, {}, None

    def _replace(self) -> None:
        self._discard()
        self.restarts += 1
        self.start()

    def _ensure_ready(self) -> None:
        self.start()
        if self.info:
            return
        ray = import_ray()
        try:
            kind, data = ray.get(self._ready, timeout=self.config.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self._discard()
            raise WorkerStartError(f"{self.name} did not start in time", reason="timeout") from None
        except ray.exceptions.RayError as exc:
            self._discard()
            raise WorkerStartError(f"{self.name} could not start", reason=type(exc).__name__) from None
        if kind == "error":
            self._discard()
            cause = rebuild_chain(data)
            if isinstance(cause, KintsugiError):
                raise cause
            raise WorkerStartError(f"{self.name} could not start", reason=str(cause)) from cause
        self.info = {**data, "replica": self.name}

    def restart(self) -> None:
        with self._lock:
            self._replace()

    def close(self) -> None:
        with self._lock:
            self._discard()

    def cancel(self, job_id: str | None = None) -> None:
        if self._actor is not None and (job_id is None or job_id == self._job_id):
            self._actor.cancel.remote(job_id or "")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._ensure_ready()
            ray = import_ray()
            try:
                stats: dict[str, Any] = ray.get(self._actor.stats.remote(), timeout=10)
            except ray.exceptions.GetTimeoutError:
                raise WorkerStartError(f"{self.name} did not answer", reason="stats timeout") from None
            except ray.exceptions.RayError as exc:
                self._replace()
                raise translate_ray_error(exc, phase="stats", replica=self.name) from None
            return stats

    def run(
        self,
        request: GenerationRequest,
        output_path: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str],
        options: RunOptions = RunOptions(),
        job_id: str | None = None,
        should_cancel: Callable[[], bool] | None = None,
        weights: str | None = None,
    ) -> Iterator[WorkerEvent]:
        """``Worker.run``'s contract on this replica. Its ``phase`` events name the replica (``replica``), so the
        timeline says where each attempt ran."""
        cancelled = should_cancel or (lambda: False)
        while not self._lock.acquire(timeout=_POLL_S):
            if cancelled():
                raise GenerationCancelledError("cancelled before it started", phase="queued", steps_completed=0)
        try:
            if cancelled():
                raise GenerationCancelledError("cancelled before it started", phase="queued", steps_completed=0)
            yield from self._run_job(
                request, output_path, model_path, options, job_id or uuid.uuid4().hex[:12], cancelled, weights
            )
        finally:
            self._lock.release()

    def _run_job(
        self,
        request: GenerationRequest,
        output_path: str | os.PathLike[str],
        model_path: str | os.PathLike[str],
        options: RunOptions,
        job_id: str,
        cancelled: Callable[[], bool],
        weights: str | None = None,
    ) -> Iterator[WorkerEvent]:
        ray = import_ray()
        self._ensure_ready()
        payload = {
            "request": request.to_dict(),
            "output_path": os.fspath(output_path),
            "model_path": os.fspath(model_path),
            "options": asdict(options),
            "weights": weights,
        }
        stream = self._actor.generate.options(num_returns="streaming").remote(job_id, payload)
        self._job_id = job_id
        phase, phase_started = "start", time.monotonic()
        cancel_sent = ended = False
        try:
            while True:
                if not cancel_sent and cancelled():
                    self.cancel(job_id)
                    cancel_sent = True
                try:
                    ready, _ = ray.wait([stream], timeout=_POLL_S)
                    message = ray.get(next(stream)) if ready else None
                except StopIteration:
                    raise KintsugiError(f"{self.name} ended a job without a result") from None
                except ray.exceptions.RayError as exc:
                    self._replace()
                    raise translate_ray_error(exc, phase=phase, replica=self.name) from None
                if message is None:
                    if phase == "load" and time.monotonic() - phase_started > self.config.load_timeout_s:
                        self._replace()  # ray.kill: the only way to stop a load that hangs
                        raise ModelLoadTimeoutError(
                            f"loading the model took longer than {self.config.load_timeout_s:g} s",
                            model_id=request.model_id,
                            timeout_s=self.config.load_timeout_s,
                        )
                    continue
                kind, _job, data = message
                if kind == "phase":
                    phase, phase_started = data["phase"], time.monotonic()
                    yield WorkerEvent("phase", job_id, {**data, "replica": self.name})
                elif kind == "progress":
                    yield WorkerEvent("progress", job_id, data)
                elif kind == "result":
                    ended = True
                    output = GenerationOutput.from_dict(data)
                    self.jobs_run += 1
                    self.loaded_model = output.model_id or request.model_id
                    yield WorkerEvent("result", job_id, output=output)
                    return
                elif kind == "error":
                    ended = True
                    raise rebuild_chain(data)
        except GeneratorExit:  # the caller stopped reading: stop the job, so the next one finds the replica idle
            if not ended:
                self.cancel(job_id)
                self._drain(stream)
            raise
        finally:
            self._job_id = None

    def _drain(self, stream: Any) -> None:
        ray = import_ray()
        try:
            for ref in stream:
                ray.get(ref)
        except ray.exceptions.RayError:  # it died meanwhile: a fresh one for the next job
            self._replace()


class ReplicaPool:
    """N replicas as one ``WorkerBackend``: each ``run`` goes to a free replica — one with the model warm first
    (fewest jobs run among them), else one already started, else any free one — and waits while all are busy, so
    the service runs as many requests at once as there are replicas. ``info``, ``stats`` and ``restart`` act on
    the replica that the calling thread's last job ran on (the memory freer measures the replica that failed, not
    another one).

    ``replicas`` is the replica count (each needs one GPU, a logical one on a CPU machine: ``connect``'s
    ``logical_gpus``; ``None``: one per GPU, one on a machine without); ``threads`` caps each replica's torch
    threads; ``address`` is the cluster's (``None``: a local instance). ``close`` shuts Ray down when this pool
    started it (``owns_ray``)."""

    def __init__(
        self,
        config: WorkerConfig | None = None,
        *,
        replicas: int | None = None,
        threads: int | None = None,
        address: str | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if replicas is not None and replicas < 1:
            raise ValueError(f"`replicas` must be at least 1 (got {replicas})")
        self.config = config or WorkerConfig()
        self.address, self.temp_dir, self.threads = address, temp_dir, threads
        self.size = replicas
        self.replicas: list[RayReplica] = []
        self.owns_ray = False
        self._free = threading.Condition()
        self._busy: set[str] = set()
        self._local = threading.local()

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to Ray (or start it) and create the replicas, without waiting for them to load."""
        if self.replicas:
            return
        local_gpus = 0 if self.address is not None else _cuda_count()
        if self.size is None and self.address is None:
            self.size = local_gpus or 1
        gpus = None if self.address is not None or local_gpus else self.size
        self.owns_ray = connect(self.address, logical_gpus=gpus, temp_dir=self.temp_dir)
        ray = import_ray()
        if self.size is None:  # one per GPU of the cluster
            self.size = max(1, int(ray.cluster_resources().get("GPU", 0)))
        # One GPU each and no CPU for scheduling (with a GPU named, Ray would also reserve one CPU per actor, so
        # the CPU count, not the GPU count, would cap replicas); Ray never restarts or re-runs anything itself.
        actor_class = ray.remote(num_gpus=1, num_cpus=0, max_restarts=0, max_task_retries=0, max_concurrency=2)(
            ReplicaRuntime
        )
        self.replicas = [
            RayReplica(f"replica-{index}", actor_class, self.config, self.threads) for index in range(self.size)
        ]
        for replica in self.replicas:
            replica.start()

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()
        self.replicas = []
        if self.owns_ray:
            import_ray().shutdown()
            self.owns_ray = False

    # -- the calling thread's replica -------------------------------------------------------------------------------
    def _current(self) -> RayReplica:
        self.start()
        current: RayReplica | None = getattr(self._local, "replica", None)
        return current or self.replicas[0]

    @property
    def info(self) -> dict[str, Any]:
        """The calling thread's replica's ``info`` (``{}`` before the pool started: reading it starts nothing)."""
        return self._current().info if self.replicas else {}

    @property
    def restarts(self) -> int:
        return sum(replica.restarts for replica in self.replicas)

    @property
    def job_id(self) -> str | None:
        """A job running now (the first replica's that runs one), ``None`` when all are idle."""
        return next((replica.job_id for replica in self.replicas if replica.job_id), None)

    def stats(self) -> dict[str, Any]:
        return self._current().stats()

    def restart(self) -> None:
        self._current().restart()

    def cancel(self, job_id: str | None = None) -> None:
        for replica in self.replicas:
            if replica.job_id is not None and (job_id is None or replica.job_id == job_id):
                replica.cancel(job_id)

    # -- jobs -----------------------------------------------------------------------------------------------------
    def _pick(self, model_id: str) -> RayReplica | None:
        free = [replica for replica in self.replicas if replica.name not in self._busy]
        warm = [replica for replica in free if replica.loaded_model == model_id]
        ready = [replica for replica in free if replica.started]
        return min(warm or ready or free, key=lambda replica: replica.jobs_run, default=None)

    def run(
        self,
        request: GenerationRequest,
        output_path: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str],
        options: RunOptions = RunOptions(),
        job_id: str | None = None,
        should_cancel: Callable[[], bool] | None = None,
        weights: str | None = None,
    ) -> Iterator[WorkerEvent]:
        """``Worker.run`` on a free replica (waiting for one while all are busy; cancelled there, it never
        starts)."""
        self.start()
        cancelled = should_cancel or (lambda: False)
        with self._free:
            while (replica := self._pick(request.model_id)) is None:
                if cancelled():
                    raise GenerationCancelledError("cancelled before it started", phase="queued", steps_completed=0)
                self._free.wait(_POLL_S)
            self._busy.add(replica.name)
        self._local.replica = replica
        try:
            yield from replica.run(
                request,
                output_path,
                model_path=model_path,
                options=options,
                job_id=job_id,
                should_cancel=cancelled,
                weights=weights,
            )
        finally:
            with self._free:
                self._busy.discard(replica.name)
                self._free.notify()


def _replica_environment() -> dict[str, str]:
    """What the worker process gets from its supervisor, given to each replica too: few glibc arenas (a smaller,
    steadier address space under the memory cap), CUDA segments that grow, no hub telemetry."""
    return {
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
        "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def _cuda_count() -> int:
    """GPUs on this machine (Ray declares them itself; logical ones are declared only where there are none)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
