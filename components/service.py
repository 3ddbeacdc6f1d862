"""``GenerationService``: the one entry point for a generation, used by the app, the API and notebooks.

    1. validate the request (auto-correct Wan's shape rules, report every correction)
    2. ensure the model (the embedded model is built on first use)
    3. run it in the supervised worker, inside the recovery engine's run loop
    4. stream events (corrections, phases, denoising progress, recovery steps) and end with a result

A failure that recovery cannot fix ends the stream with ``GenerationFailedError``, whose ``report`` is the
spec's API error shape (plain-language message, steps, no paths or tokens).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from components.embedded_model import EMBEDDED_MODEL_ID, ensure_embedded_model
from components.hardware import HardwareProbe, hardware_key
from components.memory import MemoryPlan, MemoryPlanner
from components.memory_ladder import MemoryLadder, PreviewDegrader, WorkerMemoryFreer
from components.store import ModelStore, StorePort
from components.store_download import RetryPolicy
from components.pipeline import RunOptions
from components.request import GenerationRequest, validate_request
from components.settings import Settings
from components.worker import Worker, WorkerConfig
from recovery import events
from recovery.engine import EnhancedErrorRecovery
from recovery.errors import GenerationFailedError, KintsugiError
from recovery.events import RecoveryEvent
from recovery.metrics import MetricsStore, RunRow
from recovery.outcome import AttemptInfo, Outcome
from recovery.ports import ResourceFreer

__all__ = ["GenerationService", "GenerationResult", "ServiceEvent", "EMBEDDED_MODEL_NOTE"]

EMBEDDED_MODEL_NOTE = (
    "Made with the built-in tiny model: its weights are random, so the video is coloured noise. "
    "Choose a real model (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) where a network and a GPU are available."
)
_DONE = object()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceEvent:
    """One thing the user can see happen: ``correction``, ``plan`` (a memory change made before running),
    ``download`` (model bytes arriving), ``phase``, ``progress``, ``recovery`` or ``result``."""

    kind: str
    message: str
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class GenerationResult:
    """A finished video and the story of how it was made."""

    video_path: str
    request: GenerationRequest
    corrections: tuple[str, ...]
    changes: tuple[str, ...]
    degraded: bool
    attempts: int
    correlation_id: str
    output: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def recovered(self) -> bool:
        return self.attempts > 1


class GenerationService:
    """Validates, runs in the worker with recovery, streams events, records metrics."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        worker: Worker | None = None,
        engine: EnhancedErrorRecovery | None = None,
        freer: ResourceFreer | None = None,
        store: ModelStore | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        # Few, quick retries inside the store: the engine's own retry strategy backs off between whole attempts.
        self.store = store or ModelStore(self.settings.hub_cache_dir, self.settings.store_state_dir,
                                         retry=RetryPolicy(attempts=3, base_s=0.5))
        # The embedded model enters the hub cache like any model; its "download" is a build from code.
        self.store.register_local_source(
            EMBEDDED_MODEL_ID, lambda _target: ensure_embedded_model(self.settings.embedded_model_dir), install=False)
        self.worker = worker or Worker(WorkerConfig(
            device=self.settings.device, dtype=self.settings.dtype, memory_cap=self.settings.worker_memory_cap,
            load_timeout_s=self.settings.load_timeout_s,
        ))
        cap = self.settings.worker_memory_cap
        probe = HardwareProbe(cap)
        hardware = probe()
        self.device = hardware.get("device", "cpu") if self.settings.device == "auto" else self.settings.device
        # The memory planner predicts each request's need from measurements and learns from every run.
        self.planner = MemoryPlanner(self.settings.data_dir / "memory_calibration.json",
                                     hardware=hardware_key(hardware), dtype=self.settings.dtype)
        self.metrics: MetricsStore | None = None
        if engine is None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.metrics = MetricsStore(self.settings.metrics_db)
            memory_freer = WorkerMemoryFreer(self.worker, planner=self.planner)
            engine = EnhancedErrorRecovery(
                self.settings.max_recovery_attempts, self.settings.recovery_timeout_s,
                self.settings.user_intervention_threshold, store=StorePort(self.store),
                adjuster=MemoryLadder(self.planner, budget=cap, device=self.device, freer=memory_freer),
                freer=freer or memory_freer,
                degrader=PreviewDegrader(self.planner, budget=cap, device=self.device),
                probe=probe, metrics=self.metrics,
            )
        self.engine = engine

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (it imports in the background) and make sure the default model is ready."""
        self.worker.start()
        self.store.ensure(EMBEDDED_MODEL_ID)

    def close(self) -> None:
        self.worker.close()
        if self.metrics is not None:
            self.metrics.close()

    def __enter__(self) -> GenerationService:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest | Mapping[str, Any], *, session_id: str | None = None
                 ) -> Iterator[ServiceEvent]:
        """Run ``request`` with recovery; yield what happens, ending with a ``result`` event.

        Raises ``GenerationFailedError`` (with ``report``) when the request cannot be fulfilled.
        """
        correlation_id = uuid.uuid4().hex[:12]
        try:
            if not isinstance(request, GenerationRequest):
                request = GenerationRequest.from_dict(dict(request))
            checked, corrections = validate_request(request)
        except (KintsugiError, TypeError, ValueError) as exc:
            raise self._failure(exc, correlation_id, request) from exc
        for line in corrections:
            yield ServiceEvent("correction", line, {"correlation_id": correlation_id})
        cap = self.settings.worker_memory_cap
        plan = (self.planner.plan(checked, RunOptions(), cap, device=self.device) if self.settings.memory_planning
                else MemoryPlan(checked, RunOptions(), 0, cap, True))
        for line in plan.changes:
            yield ServiceEvent("plan", line, {"correlation_id": correlation_id, "degraded": plan.degraded})

        inbox: queue.Queue[Any] = queue.Queue()
        outcome_box: list[Outcome[Any]] = []

        def listen(event: RecoveryEvent) -> None:
            if event.correlation_id == correlation_id:
                inbox.put(ServiceEvent("recovery", event.name, {**event.data, "correlation_id": correlation_id}))

        def attempt(parameters: Mapping[str, Any], info: AttemptInfo) -> dict[str, Any]:
            # The engine may have switched the model (intelligent fallback): its choice wins over the parameters.
            attempt_request = GenerationRequest.from_dict({**parameters, "model_id": info.model_id
                                                           or parameters["model_id"]})
            options = RunOptions(**dict(parameters.get("options") or {}))
            model_path = self.store.ensure(attempt_request.model_id, on_event=lambda download: inbox.put(
                ServiceEvent("download", download.kind.value, {
                    "model_id": download.repo_id, "bytes_done": download.bytes_done,
                    "bytes_total": download.bytes_total, "eta_s": download.eta_s, "attempt": info.number})))
            output_path = self.settings.outputs_dir / f"{correlation_id}-{info.number}.mp4"
            for worker_event in self.worker.run(attempt_request, output_path, model_path=model_path,
                                                options=options):
                if worker_event.kind == "result":
                    need = worker_event.data["extra"].get("address_space_need")
                    self.planner.record(attempt_request, options, need or worker_event.data["peak_memory_bytes"],
                                        True, memory_cap=cap, exact=True if need else None)
                    return worker_event.data
                message = worker_event.data.get("phase", "") if worker_event.kind == "phase" else (
                    f"step {worker_event.data['step']}/{worker_event.data['total']}")
                inbox.put(ServiceEvent(worker_event.kind, message, {**worker_event.data,
                                                                    "attempt": info.number}))
            raise KintsugiError("the worker ended a job without a result")

        def run() -> None:
            started = time.time()
            try:
                outcome_box.append(self.engine.run(
                    attempt, plan.parameters, model_id=checked.model_id,
                    correlation_id=correlation_id, hardware_key=self.worker.config.device,
                    user_session_id=session_id,
                ))
            except BaseException as exc:  # cancellation and anything the engine lets through
                inbox.put(exc)
            else:  # recorded here, so a run counts even when the caller stopped reading the stream
                self._record_run(outcome_box[0], checked, started)
            finally:
                inbox.put(_DONE)

        unsubscribe = self.engine.bus.subscribe(listen)
        thread = threading.Thread(target=run, name=f"generate-{correlation_id}", daemon=True)
        thread.start()
        try:
            while (item := inbox.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            unsubscribe()
        outcome = outcome_box[0]
        if not outcome.ok:
            raise self._failure(outcome.error, correlation_id, checked, outcome)
        yield ServiceEvent("result", "done", {"result": self._result(outcome, plan, corrections)})

    def generate_video(self, request: GenerationRequest | Mapping[str, Any]) -> GenerationResult:
        """``generate`` without the stream: the finished result (or ``GenerationFailedError``)."""
        for event in self.generate(request):
            if event.kind == "result":
                return event.data["result"]
        raise KintsugiError("generation ended without a result")

    def cancel(self) -> None:
        """Stop the running generation at its next denoising step."""
        self.worker.cancel()

    def _record_run(self, outcome: Outcome[Any], requested: GenerationRequest, started: float) -> None:
        """One row per request in the metrics store: how it ended, after how many tries, and the quality it
        kept (pixel·frames made over pixel·frames asked). Recording never breaks a generation."""
        if self.metrics is None:
            return
        try:
            quality = None
            if outcome.ok:
                made = outcome.value["width"] * outcome.value["height"] * outcome.value["frames"]
                quality = min(1.0, made / (requested.width * requested.height * requested.num_frames))
            self.metrics.record_run(RunRow.from_outcome(outcome, started_at=started, finished_at=time.time(),
                                                        quality_kept=quality))
        except Exception:
            log.exception("could not record run %s in the metrics store", outcome.correlation_id)

    def _result(self, outcome: Outcome[Any], plan: MemoryPlan, corrections: list[str]) -> GenerationResult:
        output = dict(outcome.value)
        actual = GenerationRequest.from_dict(output["request"])
        notes = (EMBEDDED_MODEL_NOTE,) if actual.model_id == EMBEDDED_MODEL_ID else ()
        return GenerationResult(
            video_path=output["video_path"], request=actual, corrections=tuple(corrections),
            changes=(*plan.changes, *outcome.changes), degraded=outcome.degraded or plan.degraded,
            attempts=len(outcome.attempts), correlation_id=outcome.correlation_id, output=MappingProxyType(output),
            notes=notes,
        )

    def _failure(self, error: BaseException | None, correlation_id: str, request: Any,
                 outcome: Outcome[Any] | None = None) -> GenerationFailedError:
        """The catalogued, scrubbed report for a request that ends without a video."""
        data_dir = str(self.settings.data_dir)
        report = outcome.api_error(data_dir=data_dir) if outcome is not None else None
        if report is None:
            parameters = request.to_dict() if isinstance(request, GenerationRequest) else {}
            ctx = self.engine.categorize(error or KintsugiError("unknown failure"), {
                "correlation_id": correlation_id, "operation": "generate", "user_parameters": parameters,
            })
            from recovery.messages import api_error

            report = api_error(ctx, data_dir=data_dir)
        return GenerationFailedError(
            report["error"]["user_message"], report=report, correlation_id=correlation_id,
            attempts=len(outcome.attempts) if outcome is not None else 0,
        )
