"""``WorkerBackend``: what the service needs from whatever runs its generations.

Today's supervised process (``components.generation.worker.Worker``) is one such backend; a pool of Ray actors
(``components.backends.ray_backend.ReplicaPool``) is another. The service, the memory freer and the recovery
engine's restarter only ever use these members, so either backend slots in without them knowing which it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from components.generation.request import GenerationRequest, RunOptions
from components.generation.worker import WorkerConfig, WorkerEvent

__all__ = ["WorkerBackend"]


@runtime_checkable
class WorkerBackend(Protocol):
    """Runs generations away from the app and streams their events back.

    ``run`` yields ``WorkerEvent``s (``phase``, ``progress``, then one ``result``) and raises the product's typed
    errors: ``OutOfMemoryError`` from the job, ``WorkerCrashedError`` when whatever ran it died (a fresh one is
    already starting), ``ModelLoadTimeoutError``, ``GenerationCancelledError``. ``info`` and ``stats`` describe the
    worker that ran (or will run) the calling thread's job — its ``pid``, ``memory_cap`` and address-space limit —
    which is what the memory freer measures after a failure; ``restart`` replaces that worker."""

    @property
    def config(self) -> WorkerConfig: ...

    @property
    def restarts(self) -> int: ...

    @property
    def info(self) -> dict[str, Any]: ...

    @property
    def job_id(self) -> str | None: ...

    def start(self) -> None: ...

    def run(
        self,
        request: GenerationRequest,
        output_path: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str],
        options: RunOptions = ...,
        job_id: str | None = None,
        should_cancel: Callable[[], bool] | None = None,
        weights: str | None = None,
    ) -> Iterator[WorkerEvent]: ...

    def cancel(self, job_id: str | None = None) -> None: ...

    def restart(self) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...
