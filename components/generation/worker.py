"""The supervised worker process: generation runs here, away from the app.

Only a process boundary lets us kill a model load that hangs, survive the host's OOM killer or a segfault, start
over after a poisoned CUDA context, and cap memory to emulate a smaller machine. The worker keeps the pipeline
warm between requests; the supervisor (``Worker``) streams its progress back, notices its death within a fraction
of a second, reports a typed error and starts a fresh one.

Memory cap: on the CPU the cap is ``RLIMIT_AS`` set to the worker's address-space size after its imports plus
the cap, so the cap is what models and generation may use; on CUDA it is ``set_per_process_memory_fraction``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from recovery.classify import raised_in
from recovery.errors import (
    GenerationCancelledError,
    KintsugiError,
    ModelLoadTimeoutError,
    OutOfMemoryError,
    WorkerCrashedError,
    WorkerStartError,
)
from recovery.procfs import process_status

__all__ = ["JobHost", "Worker", "WorkerConfig", "WorkerEvent", "rebuild_chain"]

log = logging.getLogger(__name__)
_POLL_S = 0.1
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
# A frame of faulthandler's report: ``File "/…/attention_dispatch.py", line 3760 in _native_attention``
_CRASH_FRAME = re.compile(r'^\s*File "(?:[^"]*/)?([^"/]+?)(?:\.py)?", line \d+ in (\S+)', re.MULTILINE)


@dataclass(frozen=True)
class WorkerConfig:
    """How the worker process runs."""

    device: str = "auto"
    dtype: str = "bfloat16"
    memory_cap: int | None = None  # bytes available to models and generation; None = no cap
    load_timeout_s: float = 600.0
    start_timeout_s: float = 120.0
    # Where the per-machine dtype speed probe is remembered (generation.precision); None: probe at every start
    precision_cache: str | None = None


@dataclass(frozen=True)
class WorkerEvent:
    """One message from a running job: ``phase`` (data: phase), ``progress`` (data: phase — ``denoise`` for a
    denoising step, ``decode`` for a decoder chunk —, step, total) or ``result`` (``output``: the typed
    ``GenerationOutput``, rebuilt here from what crossed the process boundary)."""

    kind: Literal["phase", "progress", "result"]
    job_id: str
    data: dict[str, Any] = field(default_factory=dict)
    output: GenerationOutput | None = None


# --------------------------------------------------------------------------------------------------------------
# Inside the worker process
# --------------------------------------------------------------------------------------------------------------
def _vm_size(field: str = "VmSize") -> int:
    """This process's address-space size (``VmSize``) or its peak so far (``VmPeak``), in bytes."""
    value = process_status(field).get(field)
    if value is None:
        raise OSError(f"{field} not found in /proc/self/status")
    return value


def _apply_memory_cap(cap: int | None, device: str) -> dict[str, Any]:
    if cap is None:
        return {"memory_cap": None}
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
        return {"memory_cap": cap, "cap_kind": "cuda_memory_fraction"}
    import resource

    limit = _vm_size() + cap
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    return {"memory_cap": cap, "cap_kind": "rlimit_as", "address_space_limit": limit}


def _exception_chain(exc: BaseException) -> list[bytes]:
    """Pickle ``exc`` and its causes one by one (pickling drops ``__cause__``; the classifier needs the chain)."""
    chain: list[bytes] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 8:
        seen.add(id(current))
        if not isinstance(current, KintsugiError):  # the traceback does not cross: keep the module that raised it
            try:
                current._raised_in = raised_in(current)  # type: ignore[attr-defined]
            except AttributeError:  # an exception type with __slots__
                pass
        try:
            chain.append(pickle.dumps(current))
        except Exception:  # an exception type that does not pickle: keep its type name and text
            chain.append(pickle.dumps(RuntimeError(f"{type(current).__name__}: {current}")))
        current = current.__cause__ or current.__context__
    return chain


def rebuild_chain(chain: list[bytes]) -> BaseException:
    """The exception a pickled chain (``_exception_chain``) came from, its causes linked again."""
    errors = [pickle.loads(item) for item in chain]
    for error, cause in zip(errors, errors[1:]):
        error.__cause__ = cause
    return errors[0]


class _Cancelled:
    """The running job's view of the pipe: a ``cancel`` message for this job (or for whatever runs: no id) sets
    it; a late one meant for an earlier job is dropped."""

    def __init__(self, conn: Connection, job_id: str) -> None:
        self.conn, self.job_id = conn, job_id
        self.flag = False

    def __call__(self) -> bool:
        while not self.flag and self.conn.poll():
            command, job_id, _payload = self.conn.recv()
            if command == "cancel" and job_id in ("", self.job_id):
                self.flag = True
        return self.flag


def _precision(config: WorkerConfig, device: str) -> Any:  # pragma: no cover - child process
    """The dtype per component for this machine (``generation.precision``); the asked dtype if the probe fails."""
    from components.generation.precision import PrecisionChoice, PrecisionProbe

    try:
        return PrecisionProbe(config.precision_cache).choose(device, config.dtype)
    except Exception:  # a probe must never fail a generation
        return PrecisionChoice(config.dtype)


class JobHost:  # pragma: no cover - runs in the worker process (and in a Ray replica)
    """What runs jobs inside a worker process and inside a Ray replica alike: one warm ``VideoGenerator`` under the
    memory cap, the precision probe in the first job, a model loaded again when its weights key changed, and the
    address-space need of a run that set a new peak. Construction never raises: ``failure`` holds the pickled
    error chain of a start that failed (told to the app as the ``ready`` answer)."""

    def __init__(self, config: WorkerConfig) -> None:
        from components.generation.pipeline import VideoGenerator

        self.config = config
        self.failure: list[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._probed = False
        self._weights_of: dict[str, str | None] = {}  # model → the weights key of its last job
        try:
            self.generator = VideoGenerator(device=config.device, dtype=config.dtype)
            self.info = {
                "pid": os.getpid(),
                "device": self.generator.device,
                **_apply_memory_cap(config.memory_cap, self.generator.device),
            }
            self.generator.memory_cap = config.memory_cap
        except Exception as exc:
            self.failure = _exception_chain(exc)
            return
        self._baseline = _vm_size()  # what the memory cap is measured from
        self._peak_seen = _vm_size("VmPeak")

    def stats(self) -> dict[str, Any]:
        return {"denoise_steps_run": self.generator.denoise_steps_run, "vm_size": _vm_size()}

    def run(
        self,
        job_id: str,
        payload: dict[str, Any],
        send: Callable[[tuple[str, str, Any]], None],
        should_cancel: Callable[[], bool],
    ) -> tuple[str, str, Any]:
        """One job: its ``phase``/``progress`` messages through ``send`` as they happen; returns the ``result``
        message (the output as a dict) or the ``error`` one (the pickled exception chain). After an error, call
        ``release`` once the returned message is sent: by then the failed run's memory is unreachable."""
        try:
            return ("result", job_id, self._generate(job_id, payload, send, should_cancel))
        except Exception as exc:
            return ("error", job_id, _exception_chain(exc))

    def release(self) -> None:
        """Give a failed run's memory back to the system (not only to the heap) before the next job."""
        from components.generation.pipeline import release_memory

        release_memory(self.generator.pipe)

    def _generate(self, job_id: str, payload: dict[str, Any], send: Callable[..., None], cancel: Any) -> dict:
        generator = self.generator
        if not self._probed:  # in the first job, under the cap, as its own kernels would first run there
            self._probed = True
            generator.precision = _precision(self.config, generator.device)
        model_id, weights = payload["request"]["model_id"], payload.get("weights")
        if generator.model_id == model_id and weights != self._weights_of.get(model_id):
            generator.unload()  # its files were repaired or replaced since it was loaded: load them again
        self._weights_of[model_id] = weights

        def progress(phase: str, step: int, total: int) -> None:
            send(("progress", job_id, {"phase": phase, "step": step, "total": total}))

        output = generator.generate(
            GenerationRequest.from_dict(payload["request"]),
            payload["output_path"],
            model_path=payload["model_path"],
            options=RunOptions(**payload["options"]),
            on_step=partial(progress, "denoise"),
            on_phase=lambda phase: send(("phase", job_id, {"phase": phase})),
            should_cancel=cancel,
            on_decode_step=partial(progress, "decode"),
        )
        peak = _vm_size("VmPeak")
        if peak > self._peak_seen:  # this run set a new peak: its address-space need is known exactly
            output = replace(output, address_space_need=peak - self._baseline)
            self._peak_seen = peak
        return output.to_dict()


def _worker_main(conn: Connection, config: WorkerConfig) -> None:  # pragma: no cover - child process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the app, which stops us itself
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    host = JobHost(config)
    if host.failure is not None:
        conn.send(("error", "", host.failure))
        return
    conn.send(("ready", "", host.info))
    while True:
        try:
            command, job_id, payload = conn.recv()
        except EOFError:
            return
        if command == "stop":
            return
        if command == "stats":
            conn.send(("stats", job_id, host.stats()))
            continue
        if command != "generate":  # e.g. a late "cancel" for a job that already ended
            continue
        result = host.run(job_id, payload, conn.send, _Cancelled(conn, job_id))
        conn.send(result)
        if result[0] == "error":
            host.release()


# --------------------------------------------------------------------------------------------------------------
# In the app: the supervisor
# --------------------------------------------------------------------------------------------------------------
class Worker:
    """Supervises one worker process; ``run`` streams a job's events and raises typed errors."""

    def __init__(self, config: WorkerConfig | None = None) -> None:
        self.config = config or WorkerConfig()
        self._lock = threading.Lock()  # one job at a time
        self._send_lock = threading.Lock()  # cancel() may send while run() is receiving
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._crash_log: Any = None  # the process's faulthandler file (unnamed: nothing is left on disk)
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self._job_id: str | None = None

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process without waiting for it (imports take seconds); ``run`` waits when it needs it."""
        if self._process is not None and self._process.poll() is None:
            return
        parent, child = socket.socketpair()
        if self._crash_log is not None:  # a process that died between jobs, never discarded
            self._crash_log.close()
        self._crash_log = tempfile.TemporaryFile(prefix="kintsugi-worker-crash-")  # faulthandler's report lands here
        environment = {
            **os.environ,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")])),
            # fewer glibc arenas: a smaller, steadier address space under RLIMIT_AS
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
            # CUDA: segments that grow instead of fixed blocks avoid most fragmentation OOMs (the user's own wins)
            "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
        }
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from components.generation.worker import child_main; child_main()",
                str(child.fileno()),
                str(self._crash_log.fileno()),
            ],
            pass_fds=[child.fileno(), self._crash_log.fileno()],
            env=environment,
            stdin=subprocess.DEVNULL,
            cwd=_PROJECT_ROOT,
        )
        child.close()
        self._conn = Connection(parent.detach())
        self._conn.send(("config", "", asdict(self.config)))
        self.info = {}

    def _ensure_ready(self) -> None:
        self.start()
        if self.info:
            return
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            kind, _job, data = self._receive(time.monotonic() + _POLL_S, phase="start") or (None, None, None)
            if kind == "ready":
                self.info = data
                return
            if kind == "error":
                self._discard()
                cause = rebuild_chain(data)
                if isinstance(cause, KintsugiError):  # a typed reason (e.g. float16 on a CPU) says it all
                    raise cause
                raise WorkerStartError("the generation worker could not start", reason=str(cause)) from cause
        self._discard()
        raise WorkerStartError("the generation worker did not start in time", reason="timeout")

    def _receive(self, deadline: float, *, phase: str) -> tuple | None:
        """One message, or None at the deadline; raises ``WorkerCrashedError`` if the process died."""
        assert self._conn is not None
        if not wait([self._conn], timeout=max(0.0, deadline - time.monotonic())):
            return None
        try:
            return self._conn.recv()
        except (EOFError, OSError):  # the other end closed: the process is gone
            assert self._process is not None
            try:
                code = self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # it closed the pipe but lives on: not a worker we can use
                self._process.kill()
                code = self._process.wait()
            name = signal.Signals(-code).name if code is not None and code < 0 else None
            info, crashed_in = self.info, self._crashed_in()
            self._discard()
            self.restarts += 1
            self.start()  # a fresh worker for the next request, importing while the caller handles the error
            where = f" in {crashed_in}" if crashed_in else ""
            if name == "SIGSEGV" and info.get("cap_kind") == "rlimit_as" and phase not in ("start", "stats"):
                # Under an address-space cap a refused mmap is the usual SIGSEGV: native code (oneDNN's JIT kernels,
                # measured here in CPU attention) that does not check the allocation dies instead of raising. What
                # helps is what helps an out-of-memory, so it is reported as one, saying how it ended.
                raise OutOfMemoryError(
                    f"out of memory during {phase}: the worker died of SIGSEGV{where} at its memory cap",
                    phase=phase,
                    device="cpu",
                    memory_cap=info.get("memory_cap"),
                    reason="native_crash_at_cap",
                    cause="native code died of a refused allocation at the worker's memory cap",
                ) from None
            raise WorkerCrashedError(
                f"the generation worker stopped unexpectedly during {phase}"
                + (f" (killed by {name}{where})" if name else f" (exit code {code})"),
                exitcode=code,
                signal_name=name,
                phase=phase,
                crashed_in=crashed_in,
            ) from None

    def _crashed_in(self) -> str | None:
        """``module.function`` where the dead process's Python stack was when it crashed (faulthandler's report)."""
        if self._crash_log is None:
            return None
        try:
            report = os.pread(self._crash_log.fileno(), 64 * 1024, 0).decode("utf-8", "replace")
        except OSError:
            return None
        current = report.rfind("Current thread")
        match = _CRASH_FRAME.search(report, current if current >= 0 else 0)
        return f"{match.group(1)}.{match.group(2)}" if match else None

    def _discard(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        if self._conn is not None:
            self._conn.close()
        if self._crash_log is not None:
            self._crash_log.close()
        self._process, self._conn, self._crash_log, self.info = None, None, None, {}

    def restart(self) -> None:
        """Replace the process (e.g. when memory did not come back after a failure)."""
        with self._lock:
            self._discard()
            self.restarts += 1
            self.start()

    def close(self) -> None:
        """Stop the process politely, then firmly."""
        with self._lock:
            if self._conn is not None and self._process is not None and self._process.poll() is None:
                try:
                    self._conn.send(("stop", "", None))
                    self._process.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._discard()

    @property
    def job_id(self) -> str | None:
        """The id of the job running in the process now (``None`` when it is idle or jobs only wait)."""
        return self._job_id

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to the worker process (what the host OOM killer does; used by tests and chaos)."""
        if self._process is not None and self._process.pid:
            os.kill(self._process.pid, sig)

    def cancel(self, job_id: str | None = None) -> None:
        """Ask job ``job_id`` (by default whatever job runs) to stop at its next denoising step or decoder chunk;
        the job then ends with ``GenerationCancelledError`` and the process stays warm. A cancel for a job that
        already ended, or that is not this worker's, is ignored."""
        if self._conn is not None:
            try:
                with self._send_lock:
                    self._conn.send(("cancel", job_id or "", None))
            except OSError:
                pass

    def stats(self) -> dict[str, Any]:
        """Counters from inside the worker (denoising steps run, address-space size)."""
        with self._lock:
            self._ensure_ready()
            assert self._conn is not None
            self._conn.send(("stats", "", None))
            while True:
                message = self._receive(time.monotonic() + 10, phase="stats")
                if message is None:
                    raise WorkerStartError("the generation worker did not answer", reason="stats timeout")
                if message[0] == "stats":
                    return message[2]

    # -- jobs -----------------------------------------------------------------------------------------------------
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
        """Run one generation; yield ``phase``/``progress`` events, then one ``result`` event.

        ``weights`` names the state of the model's files; the worker loads a model it holds again when this
        differs from the one its previous job of that model gave (the files were repaired or replaced since).

        Jobs run one at a time: a second one waits here. ``job_id`` names the job (for ``cancel(job_id)``; by
        default a fresh id). ``should_cancel`` is asked while the job waits — once it says yes the job never
        starts — and while it runs, when it sends the worker the job's cancel.

        Raises the worker's typed errors (e.g. ``OutOfMemoryError``), ``GenerationCancelledError`` when the job
        was cancelled (``phase`` ``queued`` when it never started), ``WorkerCrashedError`` when the process died (a
        fresh one is already starting) and ``ModelLoadTimeoutError`` when loading exceeded the limit. Closing the
        iterator before the end cancels the job and waits for the worker to be idle again.
        """
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
        """One job, with the lock held: send it, then relay its messages until it ends."""
        self._ensure_ready()
        assert self._conn is not None
        payload = {
            "request": request.to_dict(),
            "output_path": os.fspath(output_path),
            "model_path": os.fspath(model_path),
            "options": asdict(options),
            "weights": weights,
        }
        with self._send_lock:
            self._conn.send(("generate", job_id, payload))
            self._job_id = job_id
        phase, phase_started = "start", time.monotonic()
        cancel_sent = ended = False
        try:
            while True:
                if not cancel_sent and cancelled():
                    self.cancel(job_id)
                    cancel_sent = True
                message = self._receive(time.monotonic() + _POLL_S, phase=phase)
                if message is None:
                    if phase == "load" and time.monotonic() - phase_started > self.config.load_timeout_s:
                        self._discard()
                        self.restarts += 1
                        self.start()
                        raise ModelLoadTimeoutError(
                            f"loading the model took longer than {self.config.load_timeout_s:g} s",
                            model_id=request.model_id,
                            timeout_s=self.config.load_timeout_s,
                        )
                    continue
                kind, _job, data = message
                if kind == "phase":
                    phase, phase_started = data["phase"], time.monotonic()
                    yield WorkerEvent("phase", job_id, data)
                elif kind == "progress":
                    yield WorkerEvent("progress", job_id, data)
                elif kind == "result":
                    ended = True
                    yield WorkerEvent("result", job_id, output=GenerationOutput.from_dict(data))
                    return
                elif kind == "error":
                    raise rebuild_chain(data)
        except GeneratorExit:  # the caller stopped reading: stop the job too, so the next one finds the worker idle
            if not ended:
                self.cancel(job_id)
                self._wait_for_end(phase)
            raise
        finally:
            self._job_id = None

    def _wait_for_end(self, phase: str) -> None:
        """Read a cancelled job's last messages until it ends (or the process dies: a fresh one is starting)."""
        try:
            while (message := self._receive(time.monotonic() + _POLL_S, phase=phase)) is None or message[0] not in (
                "result",
                "error",
            ):
                pass
        except WorkerCrashedError:
            pass


def child_main() -> None:  # pragma: no cover - the worker process itself
    """Entry point of the worker process: the socket's descriptor is ``argv[1]``, faulthandler's file ``argv[2]``,
    the config its first message."""
    connection = Connection(int(sys.argv[1]))
    if len(sys.argv) > 2:  # a native crash leaves its Python stack for the supervisor to name (``_crashed_in``)
        faulthandler.enable(file=int(sys.argv[2]), all_threads=False)
    try:
        _kind, _job, config = connection.recv()
        _worker_main(connection, WorkerConfig(**config))
    except (EOFError, ConnectionError):  # the app is gone (stopped, killed): no one is left to tell
        sys.exit(0)
