"""``GenerationService``: the one entry point for a generation, used by the app, the API and notebooks.

    1. validate the request (auto-correct Wan's shape rules, report every correction)
    2. ensure the model (the embedded model is built on first use)
    3. run it in the supervised worker, inside the recovery engine's run loop
    4. stream events (corrections, phases, denoising progress, recovery steps) and end with a result

A failure that recovery cannot fix ends the stream with ``GenerationFailedError``, whose ``report`` is the
spec's API error shape (plain-language message, steps, no paths or tokens).

Every request is written to the ``RequestJournal`` (``journal.sqlite`` in the data folder) before its work starts,
under its correlation id (fresh, or chosen by the caller: a repeat of a journaled id never runs again); requests
the app was killed during are re-run when the service starts again (see ``request_status``), and finished entries
past the retention are deleted then.
"""

from __future__ import annotations

import logging
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from components.embedded_model import EMBEDDED_MODEL_ID, ensure_embedded_model
from components.hardware import HardwareProbe, hardware_key
from components.journal import JournalEntry, RequestJournal
from components.memory import MemoryPlan, MemoryPlanner
from components.memory_ladder import MemoryLadder, PreviewDegrader, WorkerMemoryFreer
from components.model_views import format_bytes
from components.optimisations import OptimisationSwitch
from components.store import ModelStore, StorePort
from components.store_download import RetryPolicy
from components.pipeline import RunOptions
from components.request import GenerationRequest, validate_request
from components.settings import Settings
from components.worker import Worker, WorkerConfig
from recovery import events
from recovery.engine import EnhancedErrorRecovery
from recovery.errors import (GenerationFailedError, InvalidParameterError, KintsugiError, ModelCompatibilityError,
                             RequestExistsError, WorkerCrashedError)
from recovery.events import RecoveryEvent
from recovery.metrics import MetricsStore, RunRow
from recovery.outcome import AttemptInfo, Outcome
from recovery.ports import ResourceFreer
from recovery.strategies import FirstAdjuster

__all__ = ["GenerationService", "GenerationResult", "ServiceEvent", "CORRELATION_ID", "EMBEDDED_MODEL_NOTE"]

EMBEDDED_MODEL_NOTE = (
    "Made with the built-in tiny model: its weights are random, so the video is coloured noise. "
    "Choose a real model (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) where a network and a GPU are available."
)
RESTARTED_REASON = "the app stopped while this request was running; it was retried after restart"
STOPPED_AGAIN_REASON = ("the app stopped while this request was running, and again during its retry after "
                        "restart; it was not retried a second time")
MAX_RESTARTS = 1  # re-runs after the app stopped; a request that keeps killing the app must not loop forever
CORRELATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # use with fullmatch: also a file-name part and a URL segment
_DONE = object()
TEXT_TO_VIDEO_PIPELINES = frozenset({"WanPipeline"})
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
        # Speed-ups that failed on this machine are turned off by the engine and stay off for later requests.
        self.optimisations = OptimisationSwitch()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.journal = RequestJournal(self.settings.journal_db)
        self._apply_journal_retention()
        if engine is None:
            self.metrics = MetricsStore(self.settings.metrics_db)
            memory_freer = WorkerMemoryFreer(self.worker, planner=self.planner)
            engine = EnhancedErrorRecovery(
                self.settings.max_recovery_attempts, self.settings.recovery_timeout_s,
                self.settings.user_intervention_threshold, store=StorePort(self.store),
                adjuster=FirstAdjuster((self.optimisations, MemoryLadder(self.planner, budget=cap,
                                                                         device=self.device, freer=memory_freer))),
                freer=freer or memory_freer,
                degrader=PreviewDegrader(self.planner, budget=cap, device=self.device),
                probe=probe, metrics=self.metrics,
            )
        self.engine = engine

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (it imports in the background), make sure the default model is ready, and re-run in
        the background the requests the app was stopped during."""
        self.worker.start()
        self.store.ensure(EMBEDDED_MODEL_ID)
        self.reconcile()

    def close(self) -> None:
        self.worker.close()
        if self.metrics is not None:
            self.metrics.close()
        self.journal.close()

    def __enter__(self) -> GenerationService:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest | Mapping[str, Any], *, session_id: str | None = None,
                 correlation_id: str | None = None) -> Iterator[ServiceEvent]:
        """Run ``request`` with recovery; yield what happens, ending with a ``result`` event.

        ``correlation_id`` names the request (``CORRELATION_ID``; e.g. a REST client's ``Idempotency-Key``) so the
        caller can ask ``request_status`` even if it never sees an answer; by default a fresh one is made.
        Raises ``GenerationFailedError`` (with ``report``) when the request cannot be fulfilled, and its subclass
        ``RequestExistsError``, before anything runs, when the journal already holds ``correlation_id``.
        """
        correlation_id = self._claim(correlation_id)
        try:
            if not isinstance(request, GenerationRequest):
                request = GenerationRequest.from_dict(dict(request))
            checked, corrections = validate_request(request)
        except (KintsugiError, TypeError, ValueError) as exc:
            failure = self._failure(exc, correlation_id, request)
            if self._journal(self.journal.reject, correlation_id, failure.report["error"]["user_message"],
                             failure.report) is False:  # the same id was journaled meanwhile: that request stands
                raise self._exists(correlation_id) from exc
            self._record_rejection(correlation_id, failure.report["error"]["type"])
            raise failure from exc
        try:  # no journal entry, no work: a request the journal cannot hold fails before it starts
            accepted = self.journal.accept(correlation_id, checked.to_dict())
        except sqlite3.Error as exc:
            raise self._failure(exc, correlation_id, checked) from exc
        if not accepted:  # the same id was journaled meanwhile (two requests with one key): that one runs
            raise self._exists(correlation_id)
        yield from self._run(checked, corrections, correlation_id, session_id)

    def _claim(self, correlation_id: str | None) -> str:
        """A fresh correlation id, or the caller's: well-formed and not journaled yet."""
        if correlation_id is None:
            return uuid.uuid4().hex[:12]
        if not isinstance(correlation_id, str) or not CORRELATION_ID.fullmatch(correlation_id):
            error = InvalidParameterError(
                f"`correlation_id` must be 1 to 64 letters, digits, `_` or `-` (got {correlation_id!r:.80})",
                parameter="correlation_id", value=correlation_id, constraint="^[A-Za-z0-9_-]{1,64}$")
            raise self._failure(error, None, None)  # not journaled: there is no valid id to file it under
        if self.journal.get(correlation_id) is not None:
            raise self._exists(correlation_id)
        return correlation_id

    def _exists(self, correlation_id: str) -> RequestExistsError:
        """The refusal of a repeated id: the spec's error shape, saying where the existing request's status is."""
        entry = self.journal.get(correlation_id)
        status = entry.status.value if entry is not None else "unknown"
        where = f"GET /api/v1/requests/{correlation_id}"
        message = f"request {correlation_id} already exists ({status}), so it was not run again; its status: {where}"
        failure = self._failure(InvalidParameterError(
            message, parameter="correlation_id", value=correlation_id, constraint="not used by an earlier request"),
            correlation_id, None)
        # Our own words around a well-formed id: nothing to scrub (and scrub would take the route for a path).
        report = {"error": {**failure.report["error"], "message": message,
                            "user_message": f"This request was already sent, so it was not run again. Its status is "
                                            f"at {where}.",
                            "actionable_steps": [f"Read its status at {where}",
                                                 "Send a new Idempotency-Key to make a new request"]}}
        return RequestExistsError(report["error"]["user_message"], report=report, correlation_id=correlation_id,
                                  attempts=0, status=status)

    def _run(self, checked: GenerationRequest, corrections: list[str], correlation_id: str,
             session_id: str | None) -> Iterator[ServiceEvent]:
        """Plan and run a journaled request; its work starts before the first event, so it runs to its end (and
        to its journal entry) even when the caller stops reading."""
        cap = self.settings.worker_memory_cap
        options, left_off = self.optimisations.starting_options(RunOptions(compile=self.settings.compile))
        plan = (self.planner.plan(checked, options, cap, device=self.device) if self.settings.memory_planning
                else MemoryPlan(checked, options, 0, cap, True))
        plan = replace(plan, changes=(*left_off, *plan.changes))
        inbox: queue.Queue[Any] = queue.Queue()
        outcome_box: list[Outcome[Any]] = []
        failure_box: list[GenerationFailedError] = []

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
                    "bytes_total": download.bytes_total, "eta_s": download.eta_s, "attempt": info.number})),
                repair=False)  # damage goes to the engine: classified, repaired by its strategy, counted, reported
            self._check_model(attempt_request.model_id)
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
            self._journal(self.journal.mark_running, correlation_id)
            try:
                outcome_box.append(self.engine.run(
                    attempt, plan.parameters, model_id=checked.model_id,
                    correlation_id=correlation_id, hardware_key=self.worker.config.device,
                    user_session_id=session_id,
                ))
            except BaseException as exc:  # cancellation and anything the engine lets through
                self._journal_failure(exc, correlation_id, checked)
                inbox.put(exc)
            else:  # recorded here, so a run counts even when the caller stopped reading the stream
                self._record_run(outcome_box[0], checked, started)
                self._journal_outcome(outcome_box[0], checked, plan, failure_box)
            finally:
                inbox.put(_DONE)

        unsubscribe = self.engine.bus.subscribe(listen)
        thread = threading.Thread(target=run, name=f"generate-{correlation_id}", daemon=True)
        thread.start()
        try:
            for line in corrections:
                yield ServiceEvent("correction", line, {"correlation_id": correlation_id})
            for line in plan.changes:
                yield ServiceEvent("plan", line, {"correlation_id": correlation_id, "degraded": plan.degraded})
            while (item := inbox.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            unsubscribe()
        outcome = outcome_box[0]
        if not outcome.ok:
            raise failure_box[0] if failure_box else self._failure(outcome.error, correlation_id, checked, outcome)
        yield ServiceEvent("result", "done", {"result": self._result(outcome, plan, corrections)})

    def generate_video(self, request: GenerationRequest | Mapping[str, Any], *, correlation_id: str | None = None
                       ) -> GenerationResult:
        """``generate`` without the stream: the finished result (or ``GenerationFailedError``)."""
        for event in self.generate(request, correlation_id=correlation_id):
            if event.kind == "result":
                return event.data["result"]
        raise KintsugiError("generation ended without a result")

    def cancel(self) -> None:
        """Stop the running generation at its next denoising step."""
        self.worker.cancel()

    # -- the request journal --------------------------------------------------------------------------------------
    def request_status(self, correlation_id: str) -> JournalEntry | None:
        """Where request ``correlation_id`` stands (accepted, running, completed, failed); ``None`` if unknown."""
        return self.journal.get(correlation_id)

    def reconcile(self) -> list[str]:
        """Deal with every request left accepted or running by a previous run of the app (it was killed): re-run
        each in the background, or mark it failed with the reason when it cannot run. Returns the re-run ids."""
        rerun: list[tuple[str, GenerationRequest]] = []
        for entry in self.journal.unfinished():
            try:
                if entry.restarts >= MAX_RESTARTS or entry.request is None:
                    raise WorkerCrashedError(STOPPED_AGAIN_REASON, phase="restart")
                checked, _ = validate_request(GenerationRequest.from_dict(dict(entry.request)), auto_correct=False)
            except (KintsugiError, TypeError, ValueError) as exc:
                failure = self._failure(exc, entry.id, entry.request)
                reason = STOPPED_AGAIN_REASON if isinstance(exc, WorkerCrashedError) else (
                    failure.report["error"]["user_message"])
                self.journal.fail(entry.id, reason, failure.report)
                continue
            if self.journal.restart(entry.id, RESTARTED_REASON):
                rerun.append((entry.id, checked))
        if rerun:
            threading.Thread(target=self._rerun, args=(rerun,), name="journal-rerun", daemon=True).start()
        return [correlation_id for correlation_id, _ in rerun]

    def _apply_journal_retention(self) -> None:
        """Delete the finished journal entries older than ``journal_retention_days`` (0 keeps them all); their ids
        become free again. Retention never stops the service from starting."""
        days = self.settings.journal_retention_days
        if days <= 0:
            return
        try:
            deleted = self.journal.prune(days * 86400)
        except sqlite3.Error:
            log.exception("could not apply the journal's retention")
            return
        if deleted:
            log.info("deleted %d journal entries finished more than %d days ago", deleted, days)

    def _rerun(self, requests: list[tuple[str, GenerationRequest]]) -> None:
        """Run interrupted requests one after another; each ends in the journal, completed or failed."""
        for correlation_id, checked in requests:
            try:
                for _event in self._run(checked, [], correlation_id, None):
                    pass
            except GenerationFailedError:
                pass  # journaled as failed, with its reason
            except Exception:
                log.exception("re-running request %s after a restart failed", correlation_id)

    def _journal_outcome(self, outcome: Outcome[Any], checked: GenerationRequest, plan: MemoryPlan,
                         failure_box: list[GenerationFailedError]) -> None:
        """Completed with a result summary, or failed with the catalogued message and the spec's error report."""
        if not outcome.ok:
            failure = self._journal_failure(outcome.error, outcome.correlation_id, checked, outcome)
            failure_box.extend([failure] if failure else [])
            return
        output = outcome.value
        self._journal(self.journal.complete, outcome.correlation_id, {
            "video": str(output["video_path"]).rsplit("/", 1)[-1], "attempts": len(outcome.attempts),
            "degraded": bool(outcome.degraded or plan.degraded), "changes": [*plan.changes, *outcome.changes],
            "request": dict(output["request"]), "frames_sha256": output.get("frames_sha256"),
        })

    def _journal_failure(self, error: BaseException | None, correlation_id: str, checked: GenerationRequest,
                         outcome: Outcome[Any] | None = None) -> GenerationFailedError | None:
        """Mark the request failed with its catalogued message and report; the failure, or ``None`` if even the
        report could not be made (the journal then keeps the request unfinished, for the next start)."""
        try:
            failure = self._failure(error, correlation_id, checked, outcome)
        except Exception:
            log.exception("could not build the failure report of request %s", correlation_id)
            return None
        self._journal(self.journal.fail, correlation_id, failure.report["error"]["user_message"], failure.report)
        return failure

    def _journal(self, write: Any, *args: Any) -> Any:
        """A journal write after acceptance; like metrics, it never breaks a generation. The write's answer, or
        ``None`` when it failed."""
        try:
            return write(*args)
        except Exception:
            log.exception("could not write request %s to the journal", args[0])
            return None

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

    def _check_model(self, model_id: str) -> None:
        """Before loading: the model's diffusers version and classes are installed, and it is a text-to-video
        Wan pipeline (an image-to-video model would load and produce nonsense)."""
        report = self.store.availability.compatibility(model_id)
        report.raise_for_problems(model_id)
        if report.pipeline_class not in TEXT_TO_VIDEO_PIPELINES:
            raise ModelCompatibilityError(
                f"{model_id} is a {report.pipeline_class}; text-to-video needs one of "
                f"{', '.join(sorted(TEXT_TO_VIDEO_PIPELINES))}", model_id=model_id,
                reason=f"pipeline class {report.pipeline_class}")

    def _record_rejection(self, correlation_id: str, failure_type: str) -> None:
        """A request refused at validation counts in the metrics too (as a failed run with no attempt)."""
        if self.metrics is None:
            return
        now = time.time()
        try:
            self.metrics.record_run(RunRow(correlation_id, now, now, ok=False, attempts=0,
                                           first_failure_type=failure_type, final_failure_type=failure_type))
        except Exception:
            log.exception("could not record rejected request %s in the metrics store", correlation_id)

    def _result(self, outcome: Outcome[Any], plan: MemoryPlan, corrections: list[str]) -> GenerationResult:
        output = dict(outcome.value)
        actual = GenerationRequest.from_dict(output["request"])
        notes = (EMBEDDED_MODEL_NOTE,) if actual.model_id == EMBEDDED_MODEL_ID else ()
        notes += self._unfinished_download(plan.request.model_id, actual.model_id)
        return GenerationResult(
            video_path=output["video_path"], request=actual, corrections=tuple(corrections),
            changes=(*plan.changes, *outcome.changes), degraded=outcome.degraded or plan.degraded,
            attempts=len(outcome.attempts), correlation_id=outcome.correlation_id, output=MappingProxyType(output),
            notes=notes,
        )

    def _unfinished_download(self, requested: str, served_by: str) -> tuple[str, ...]:
        """A note when another model stood in and the requested one's download stopped part-way: its bytes are
        kept (so nothing downloaded is lost) and where the user resumes or frees them."""
        kept = sum(self.store.cache.partial_bytes(requested).values()) if served_by != requested else 0
        if not kept:
            return ()
        return (f"The download of {requested} stopped with {format_bytes(kept)} on disk. It is kept and resumes "
                "from there (Models tab → Download, or your next request for it); a clean-up there frees it.",)

    def _failure(self, error: BaseException | None, correlation_id: str | None, request: Any,
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
