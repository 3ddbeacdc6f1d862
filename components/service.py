"""``GenerationService``: the one entry point for a generation, used by the app, the API and notebooks.

    1. admit the request: claim its correlation id, validate (auto-correct Wan's shape rules, report every
       correction), journal it before any work starts
    2. plan memory: a request predicted not to fit the worker's cap is planned down before it runs (or, when the
       caller asked ``plan_notice`` first, run as the user chose: fewer frames, lower resolution, as asked)
    3. run it on a thread, inside the recovery engine's loop: each attempt ensures the model (download, resume,
       quick check) and runs the supervised worker
    4. stream events (corrections, plan, download, phases, denoising and decoding progress, recovery steps) and
       end with a result; phase and progress events carry the ETA (``eta_s``, ``phase_eta_s``) from the time
       model, which learns from every finished run

Another model stands in for a failed one only with the user's consent (``GenerationRequest.allow_fallback``; by
default only for the configured default model), and a result made by another model, or planned down, is marked
``changed`` and names what changed.

A failure that recovery cannot fix ends the stream with ``GenerationFailedError``, whose ``report`` is the spec's
API error shape (plain-language message, steps, no paths or tokens). ``cancel(correlation_id)`` stops one request:
one still waiting (for the worker, a download, its turn) never starts a job, one running stops at its next
denoising step or decoder chunk; its stream ends with ``RequestCancelledError`` (not retried, not a failed run).
The parts come from ``components.wiring``; crash safety (the request journal, re-runs after a stop) is
``components.journal``'s; reports are built by ``components.views.reports``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from components.backends.protocol import WorkerBackend
from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.families import family_of_folder
from components.generation.images import check_request_image
from components.generation.request import (
    GenerationOutput,
    GenerationRequest,
    RunOptions,
    split_parameters,
    validate_request,
)
from components.generation.timing import EtaClock, PhaseEstimate
from components.generation.worker import WorkerEvent
from components.journal import JournalEntry, RequestState
from components.memory.ladder import PLAN_CHOICES, MemoryPlan, PlanNotice, plan_memory, plan_notice
from components.memory.prior import read_prior, weight_bytes
from components.settings import Settings
from components.store.download import CancelToken, DownloadEvent
from components.store.health import HealthTrigger, problem_lines
from components.store.model_store import ModelStore
from components.views.history import video_file_name
from components.views.reports import GenerationResult, ServiceEvent, ServiceEventKind
from components.wiring import build_parts
from recovery.engine import EnhancedErrorRecovery
from recovery.errors import (
    CorruptModelError,
    GenerationCancelledError,
    GenerationFailedError,
    InvalidParameterError,
    KintsugiError,
    RequestCancelledError,
    WorkerCrashedError,
)
from recovery.events import RecoveryEvent
from recovery.metrics import RunRow
from recovery.outcome import AttemptInfo, Outcome
from recovery.ports import ResourceFreer

__all__ = ["REPAIRED_DURING_RUN_NOTE", "GenerationService"]

#: A result whose model was repaired while its job ran: the weights it read may have held the damage.
REPAIRED_DURING_RUN_NOTE = (
    "The model's files were found damaged and repaired while this video was being made: it may have been made "
    "from the damaged weights. Run it again to be sure."
)

_DONE = object()
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
Kind = ServiceEventKind


@dataclass
class _Active:
    """A request this service is running or about to run: how to stop it and the worker job it has in flight."""

    token: CancelToken = field(default_factory=CancelToken)
    job_id: str | None = None  # the worker job of the current attempt (waiting for the worker or running)
    attempts: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    repairs: tuple[str, int] | None = None  # the model of the current attempt's job and its repair count then


class GenerationService:
    """Admits, plans and runs requests with recovery in the worker; streams what happens."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        worker: WorkerBackend | None = None,
        engine: EnhancedErrorRecovery | None = None,
        freer: ResourceFreer | None = None,
        store: ModelStore | None = None,
    ) -> None:
        parts = build_parts(settings or Settings.from_env(), worker=worker, store=store, engine=engine, freer=freer)
        self.settings, self.store, self.worker = parts.settings, parts.store, parts.worker
        self.device, self.hardware_key = parts.device, parts.hardware_key
        self.planner, self.optimisations = parts.planner, parts.optimisations
        self.engine, self.metrics, self.reporter = parts.engine, parts.metrics, parts.reporter
        self.keeper = parts.keeper  # crash safety over the request journal
        self.journal = self.keeper.journal
        self.timing = parts.timing  # how long each phase takes here, learned from every finished run
        self.watch = parts.watch  # the model files re-checked and repaired in the background
        self._weights_sent: dict[str, str] = {}  # model → the weights key of its last job (see _weights_key)
        self.weights = parts.weights  # each cached model's weight bytes per component (the ladder's switch rungs)
        self._loaded: tuple[Any, str] | None = None  # (worker pid, model) of the last finished run: loaded there
        self.keeper.apply_retention()
        self._active: dict[str, _Active] = {}
        self._active_lock = threading.Lock()
        self._weights_known: set[str] = set()  # models whose weight bytes the planner was told
        self._component_dtypes: dict[str, str] = {}  # components the worker runs in another dtype (last result)

    @property
    def capacity(self) -> int:
        """How many requests run at once: the Ray backend's replica count (as configured), else one."""
        return int(getattr(self.worker, "size", None) or 1)

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (it imports in the background), make sure the built-in model is ready, and re-run in
        the background the requests the app was stopped during."""
        self.worker.start()
        self.store.ensure(EMBEDDED_MODEL_ID)
        self.watch.start()
        self.reconcile()

    def close(self) -> None:
        self.watch.close()
        self.worker.close()
        self.metrics.close()
        self.keeper.close()

    def __enter__(self) -> GenerationService:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest | Mapping[str, Any],
        *,
        session_id: str | None = None,
        correlation_id: str | None = None,
        plan_choice: str | None = None,
        corrections: Sequence[str] = (),
    ) -> Iterator[ServiceEvent]:
        """Run ``request`` with recovery; yield what happens, ending with a ``result`` event. A request given as a
        mapping without ``model_id`` runs on the default model (``KINTSUGI_MODEL``).

        ``request.image`` is an image prepared by ``components.generation.images.attach_image`` (at the request's
        size); ``corrections`` are the lines that preparing it reported, reported after validation's own. An image
        for a model known to be text-to-video, or none for one that needs one, is refused here, before anything
        runs.

        ``plan_choice``: the user's answer to ``plan_notice`` — ``fewer_frames``, ``lower_resolution`` or
        ``run_anyway`` runs that option; ``None`` plans automatically (a request predicted not to fit is planned
        down, and the result says so); ``cancel`` raises ``GenerationCancelledError`` and nothing is run or
        journaled. A value that is not one of the notice's choices is refused like a bad parameter, naming
        ``plan_choice``.

        ``correlation_id`` names the request (``CORRELATION_ID``; e.g. a REST client's ``Idempotency-Key``) so the
        caller can ask ``request_status`` even if it never sees an answer; by default a fresh one is made.
        Raises ``GenerationFailedError`` (with ``report``) when the request cannot be fulfilled, its subclass
        ``RequestExistsError``, before anything runs, when the journal already holds ``correlation_id``, and its
        subclass ``RequestCancelledError`` when ``cancel(correlation_id)`` stopped it.

        Closing the stream early does not stop the request: it runs to its end and its journal entry (REST
        clients and re-runs after a restart rely on that). A front-end whose user went away (a Gradio client that
        disconnected or cancelled its job: ``GeneratorExit`` in the handler) stops it explicitly::

            correlation_id = uuid.uuid4().hex[:12]
            try:
                for event in service.generate(request, correlation_id=correlation_id):
                    ...
            finally:
                service.cancel(correlation_id)  # a no-op (False) once the request has ended
        """
        if plan_choice == "cancel":
            raise GenerationCancelledError("cancelled at the plan notice: nothing was run")
        correlation_id = self.keeper.claim(correlation_id)
        try:
            request = self._request_of(request)
            checked, corrected = validate_request(request)
            check_request_image(checked)
            checked = replace(checked, allow_fallback=self.fallback_allowed(checked))
            plan = self._plan(checked, plan_choice)
        except (KintsugiError, TypeError, ValueError) as exc:
            raise self._refused(exc, correlation_id, request) from exc
        self.keeper.accept(correlation_id, checked)
        yield from self._run(checked, [*corrected, *corrections], correlation_id, session_id, plan)

    def plan_notice(self, request: GenerationRequest | Mapping[str, Any]) -> PlanNotice | None:
        """Before ``generate``: ``None`` when the request would run as asked; otherwise what memory planning would
        change and the user's choices (``fewer_frames``, ``lower_resolution`` where one is predicted to fit,
        ``run_anyway``, ``cancel``), each with its predicted memory and time — pass the choice to
        ``generate(..., plan_choice=...)``. A request that fails validation raises ``GenerationFailedError``
        (with ``report``), as ``generate`` would; nothing is journaled."""
        try:
            checked, _corrections = validate_request(self._request_of(request))
            check_request_image(checked)
        except (KintsugiError, TypeError, ValueError) as exc:
            raise self.reporter.failure(exc, None, request) from exc
        if not self.settings.memory_planning:
            return None
        options, _left_off = self.optimisations.starting_options(RunOptions(compile=self.settings.compile))
        self._know_weights(checked.model_id)
        return plan_notice(
            self.planner,
            checked,
            options,
            self.settings.worker_memory_cap,
            device=self.device,
            time_of=self._time_of,
            weights=self.weights.of,
        )

    def estimate_time(self, request: GenerationRequest, options: RunOptions = RunOptions()) -> PhaseEstimate | None:
        """Predicted seconds per phase of ``request`` on this machine (``None`` until such a run has been seen),
        counting the load only when the worker does not have the model loaded."""
        return self.timing.estimate(
            request, options, loaded=self._loaded == (self.worker.info.get("pid"), request.model_id)
        )

    def _time_of(self, request: GenerationRequest, options: RunOptions) -> float | None:
        estimate = self.estimate_time(request, options)
        return None if estimate is None else round(estimate.total_s, 1)

    def _request_of(self, request: GenerationRequest | Mapping[str, Any]) -> GenerationRequest:
        """A request given as a mapping without ``model_id`` runs on the default model."""
        if isinstance(request, GenerationRequest):
            return request
        return GenerationRequest.from_dict({"model_id": self.settings.model, **request})

    def fallback_allowed(self, checked: GenerationRequest) -> bool:
        """The user's ``allow_fallback``; by default another model may stand in only for the default model."""
        if checked.allow_fallback is not None:
            return checked.allow_fallback
        return checked.model_id == self.settings.model

    def refuse(
        self, error: BaseException, correlation_id: str | None = None, *, fields: list[dict[str, Any]] | None = None
    ) -> GenerationFailedError:
        """A request a front-end refused before admission (REST's schema check): journaled as failed under
        ``correlation_id`` (claimed as ``generate`` claims it), with its metrics run; the failure to answer. Its
        report's error carries ``fields``, every invalid parameter, when given."""
        return self._refused(error, self.keeper.claim(correlation_id), None, fields)

    def _refused(
        self, error: BaseException, correlation_id: str, request: Any, fields: list[dict[str, Any]] | None = None
    ) -> GenerationFailedError:
        """File a request refused at admission: failed in the journal, one run in the metrics."""
        failure = self.reporter.failure(error, correlation_id, request)
        if fields is not None:
            failure.report["error"]["fields"] = fields
        self.keeper.reject(correlation_id, failure)
        now = time.time()
        error_type = failure.report["error"]["type"]
        self.metrics.try_record_run(
            RunRow(
                correlation_id,
                now,
                now,
                ok=False,
                attempts=0,
                first_failure_type=error_type,
                final_failure_type=error_type,
                refused=True,
            )
        )
        return failure

    def generate_video(
        self,
        request: GenerationRequest | Mapping[str, Any],
        *,
        correlation_id: str | None = None,
        plan_choice: str | None = None,
        corrections: Sequence[str] = (),
    ) -> GenerationResult:
        """``generate`` without the stream: the finished result (or ``GenerationFailedError``)."""
        for event in self.generate(
            request, correlation_id=correlation_id, plan_choice=plan_choice, corrections=corrections
        ):
            if event.kind is Kind.RESULT:
                result: GenerationResult = event.data["result"]
                return result
        raise KintsugiError("generation ended without a result")

    def cancel(self, correlation_id: str | None = None) -> bool:
        """Stop request ``correlation_id``; without an id, the request whose job runs in the worker now.

        A request still waiting (for the worker, a model download, its turn, its re-run after a restart) never
        starts a job; a running one stops at its next denoising step or decoder chunk, and the worker stays warm
        for the next request. Either way its stream ends with ``RequestCancelledError``, the journal files it
        ``cancelled`` and no failed run is recorded. Other requests are untouched. Returns whether something was
        cancelled: ``False`` for an unknown or already finished request (a late cancel is ignored)."""
        with self._active_lock:
            if correlation_id is None:
                running = self.worker.job_id
                targets = [active for active in self._active.values() if running and active.job_id == running]
            elif (found := self._active.get(correlation_id)) is not None:
                targets = [found]
            else:  # not running here: an entry waiting for its re-run is cancelled in the journal, so it never runs
                entry = self.journal.get(correlation_id)
                return (
                    entry is not None
                    and not entry.finished
                    and self.keeper.cancelled(
                        correlation_id, RequestCancelledError(correlation_id=correlation_id, phase="queued", attempts=0)
                    )
                )
            for active in targets:
                active.token.cancel()
            jobs = [active.job_id for active in targets if active.job_id is not None]
        for job_id in jobs:  # at once, rather than at the worker loop's next look at the token
            self.worker.cancel(job_id)
        return bool(targets)

    def wait_until_ended(self, correlation_id: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for request ``correlation_id`` to end here (its journal entry written, the
        worker idle); ``True`` when it is not running (any more)."""
        with self._active_lock:
            active = self._active.get(correlation_id)
        return active is None or active.ended.wait(timeout_s)

    def request_status(self, correlation_id: str) -> JournalEntry | None:
        """Where request ``correlation_id`` stands (accepted, running, completed, failed); ``None`` if unknown."""
        return self.journal.get(correlation_id)

    def reconcile(self) -> list[str]:
        """Re-run in the background every request a previous run of the app was stopped during (see
        ``JournalKeeper.reconcile``); returns their ids."""
        return self.keeper.reconcile(
            lambda correlation_id, checked: self._drain(self._run(checked, [], correlation_id, None))
        )

    # -- one journaled request ------------------------------------------------------------------------------------
    def _plan(self, checked: GenerationRequest, choice: str | None = None) -> MemoryPlan:
        """The request as it will start: speed-ups that failed here left off, memory planned down to the cap (or as
        the user chose at the plan notice; a choice made moot because the request now fits runs it as asked)."""
        if choice is not None and choice not in PLAN_CHOICES:
            constraint = f"must be one of {', '.join(PLAN_CHOICES)} or null"
            raise InvalidParameterError(
                f"`plan_choice` {constraint} (got {choice!r:.40})",
                parameter="plan_choice",
                value=choice,
                constraint=constraint,
            )
        cap = self.settings.worker_memory_cap
        options, left_off = self.optimisations.starting_options(RunOptions(compile=self.settings.compile))
        self._know_weights(checked.model_id)
        if not self.settings.memory_planning:
            plan = MemoryPlan(checked, options, 0, cap, True)
        elif choice is not None and (
            notice := plan_notice(self.planner, checked, options, cap, device=self.device, weights=self.weights.of)
        ):
            plan = notice.plan(choice)
        else:
            plan = plan_memory(self.planner, checked, options, cap, device=self.device, weights=self.weights.of)
        return replace(plan, changes=(*left_off, *plan.changes))

    def _know_weights(self, model_id: str) -> None:
        """Tell the planner the physical prior of ``model_id`` and of the built-in model (or, where a folder's
        configs are unreadable, their weight bytes, to shift the built-in model's borrowed fit), read from the
        headers and configs of their cached snapshots; a model not cached yet is skipped (its first run teaches
        the planner instead)."""
        component_dtypes = self._component_dtypes
        for name in (model_id, EMBEDDED_MODEL_ID):
            if name in self._weights_known:
                continue
            commit = self.store.cache.resolve(name, "main")
            if commit is None:
                continue
            folder = self.store.cache.snapshot_dir(name, commit)
            widths = (
                _DTYPE_BYTES.get(self.settings.dtype, 2),
                {component: _DTYPE_BYTES.get(dtype, 2) for component, dtype in component_dtypes.items()},
            )
            try:  # its physical prior from headers and configs; the weights alone where its configs are unreadable
                sizes = weight_bytes(folder, *widths)
                if (prior := read_prior(folder, *widths)) is not None:
                    self.planner.know_prior(name, prior)
                else:
                    self.planner.know_weights(name, sum(sizes.values()))
            except (OSError, ValueError):  # a damaged header: the integrity check will say so when it runs
                continue
            self.weights.know(name, sizes, widths[0])  # the ladder's switch rungs: bytes moved off the device
            self._weights_known.add(name)

    def _run(
        self,
        checked: GenerationRequest,
        corrections: list[str],
        correlation_id: str,
        session_id: str | None,
        plan: MemoryPlan | None = None,
    ) -> Iterator[ServiceEvent]:
        """Plan (unless ``plan`` is given) and run a journaled request; its work starts before the first event, so
        it runs to its end (and to its journal entry) even when the caller stops reading."""
        plan = plan or self._plan(checked)
        active = self._register(correlation_id)
        inbox: queue.Queue[Any] = queue.Queue()
        ending: list[Outcome[GenerationOutput] | GenerationFailedError | None] = []

        def listen(event: RecoveryEvent) -> None:
            if event.correlation_id == correlation_id:
                inbox.put(ServiceEvent(Kind.RECOVERY, event.name, {**event.data, "correlation_id": correlation_id}))

        def run() -> None:
            started = time.time()
            try:
                if active.token.cancelled:
                    raise GenerationCancelledError("cancelled before it started", phase="queued", steps_completed=0)
                self.keeper.running(correlation_id)
                outcome = self.engine.run(
                    lambda parameters, info: self._attempt(parameters, info, correlation_id, inbox, active),
                    plan.parameters,
                    model_id=checked.model_id,
                    correlation_id=correlation_id,
                    hardware_key=self.hardware_key,
                    user_session_id=session_id,
                    allow_fallback=self.fallback_allowed(checked),
                )
            except GenerationCancelledError as exc:  # the user's choice: journaled as such, no run row, no failure
                cancellation = RequestCancelledError(
                    correlation_id=correlation_id,
                    attempts=active.attempts,
                    phase=exc.phase,
                    steps_completed=exc.steps_completed,
                )
                self.keeper.cancelled(correlation_id, cancellation)
                inbox.put(cancellation)
            except BaseException as exc:  # anything the engine lets through
                self.keeper.failed(exc, correlation_id, checked)
                inbox.put(exc)
            else:  # recorded here, so a run counts even when the caller stopped reading the stream
                self.metrics.try_record_run(
                    RunRow.from_outcome(
                        outcome,
                        started_at=started,
                        finished_at=time.time(),
                        quality_kept=outcome.value.quality_kept(checked) if outcome.ok and outcome.value else None,
                    )
                )
                ending.extend([outcome, self.keeper.finished(outcome, checked, plan)])
            finally:
                self._unregister(correlation_id, active)
                inbox.put(_DONE)

        unsubscribe = self.engine.bus.subscribe(listen)
        threading.Thread(target=run, name=f"generate-{correlation_id}", daemon=True).start()
        try:
            for line in corrections:
                yield ServiceEvent(Kind.CORRECTION, line, {"correlation_id": correlation_id})
            for line in plan.changes:
                yield ServiceEvent(
                    Kind.PLAN,
                    line,
                    {"correlation_id": correlation_id, "degraded": plan.degraded, "changed": plan.planned_down},
                )
            while (item := inbox.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            unsubscribe()
        outcome, filed = ending
        assert isinstance(outcome, Outcome)
        if not outcome.ok:
            raise (
                filed
                if isinstance(filed, GenerationFailedError)
                else self.reporter.failure(outcome.error, correlation_id, checked, outcome)
            )
        kept = (
            0
            if outcome.model_id == checked.model_id
            else sum(self.store.cache.partial_bytes(checked.model_id).values())
        )
        result = self.reporter.result(outcome, plan, corrections, kept_bytes=kept)
        if active.repairs is not None and active.repairs[1] != self.store.health.repair_count(active.repairs[0]):
            result = replace(result, notes=(*result.notes, REPAIRED_DURING_RUN_NOTE))
        yield ServiceEvent(Kind.RESULT, "done", {"result": result})

    def _register(self, correlation_id: str) -> _Active:
        """Make the request cancellable; one cancelled in the journal meanwhile (waiting for its re-run) stays so."""
        with self._active_lock:
            active = self._active[correlation_id] = _Active()
        entry = self.journal.get(correlation_id)
        if entry is not None and entry.status is RequestState.CANCELLED:
            active.token.cancel()
        return active

    def _unregister(self, correlation_id: str, active: _Active) -> None:
        with self._active_lock:
            if self._active.get(correlation_id) is active:
                del self._active[correlation_id]
        active.ended.set()

    def _attempt(
        self,
        parameters: Mapping[str, Any],
        info: AttemptInfo,
        correlation_id: str,
        inbox: queue.Queue[Any],
        active: _Active,
    ) -> GenerationOutput:
        """One try: the model made usable, then one run in the worker; its events go to ``inbox``."""
        active.attempts = info.number
        if active.token.cancelled:  # cancelled while recovery was between tries
            raise GenerationCancelledError("cancelled before the next try", phase="queued", steps_completed=0)
        request, options = split_parameters(parameters)
        # The engine may have switched the model (intelligent fallback, the memory ladder's smaller model): its
        # choice wins over the parameters, and that model's family's shape rules apply — checked again each try, so
        # a stand-in of another family gets its own corrections, each reported (none for a request already fine).
        request, corrections = validate_request(replace(request, model_id=info.model_id or request.model_id))
        for line in corrections:
            inbox.put(
                ServiceEvent(
                    Kind.CORRECTION,
                    f"for {request.model_id}: {line}",
                    {"correlation_id": correlation_id, "attempt": info.number},
                )
            )

        def downloading(download: DownloadEvent) -> None:
            inbox.put(
                ServiceEvent(
                    Kind.DOWNLOAD,
                    download.kind.value,
                    {
                        "model_id": download.repo_id,
                        "bytes_done": download.bytes_done,
                        "bytes_total": download.bytes_total,
                        "eta_s": download.eta_s,
                        "attempt": info.number,
                    },
                )
            )

        # The model is marked in use (in every process on this cache) from before it is made usable until the run
        # ends, so no clean-up deletes it meanwhile.
        with self.store.using(request.model_id):
            # Damage goes to the engine (repair=False): classified, repaired by its strategy, counted, reported.
            model_path = self.store.ensure(request.model_id, on_event=downloading, repair=False, cancel=active.token)
            self._check_model(request.model_id, model_path)
            weights = self._weights_key(request.model_id, model_path, correlation_id, info.number, inbox)
            active.repairs = (request.model_id, self.store.health.repair_count(request.model_id))
            output_path = self.settings.outputs_dir / video_file_name(
                request.prompt, correlation_id, info.number, time.time()
            )
            job_id = f"{correlation_id}-{info.number}"
            with self._active_lock:
                active.job_id = job_id
            try:
                return self._relay(
                    self.worker.run(
                        request,
                        output_path,
                        model_path=model_path,
                        options=options,
                        job_id=job_id,
                        should_cancel=lambda: active.token.cancelled,
                        weights=weights,
                    ),
                    request,
                    options,
                    info,
                    inbox,
                    EtaClock(self.estimate_time(request, options)),
                )
            except WorkerCrashedError as crash:
                damage = self._damage_behind(crash, request.model_id, correlation_id, info.number, inbox)
                if damage is None:
                    raise
                raise damage from crash
            finally:
                with self._active_lock:
                    active.job_id = None

    def _relay(
        self,
        events: Iterator[WorkerEvent],
        request: GenerationRequest,
        options: RunOptions,
        info: AttemptInfo,
        inbox: queue.Queue[Any],
        eta: EtaClock,
    ) -> GenerationOutput:
        """The worker's events into ``inbox``, each phase and progress event with the time left from ``eta``; the
        job's output, learnt from by the memory planner and the time model."""
        for event in events:
            if event.output is not None:
                self.timing.record(event.output, step_s=eta.step_s, fixed_s=eta.fixed_s)
                self._loaded = (self.worker.info.get("pid"), event.output.model_id or request.model_id)
                need = event.output.address_space_need
                self._component_dtypes = dict(event.output.component_dtypes)
                self.planner.record(
                    request,
                    options,
                    need or event.output.peak_memory_bytes,
                    True,
                    memory_cap=self.settings.worker_memory_cap,
                    exact=True if need else None,
                )
                return event.output
            if event.kind == "phase":
                message = event.data.get("phase", "")
            elif event.data.get("phase", "denoise") == "denoise":
                message = f"step {event.data['step']}/{event.data['total']}"
            else:
                message = f"decoding {event.data['step']}/{event.data['total']}"
            timing = (
                eta.phase(event.data.get("phase", ""))
                if event.kind == "phase"
                else eta.progress(event.data.get("phase", "denoise"), event.data["step"], event.data["total"])
            )
            inbox.put(ServiceEvent(Kind(event.kind), message, {**event.data, "attempt": info.number, **timing.data()}))
        raise KintsugiError("the worker ended a job without a result")

    def _damage_behind(
        self, crash: WorkerCrashedError, model_id: str, correlation_id: str, attempt: int, inbox: queue.Queue[Any]
    ) -> CorruptModelError | None:
        """A worker killed by SIGBUS touched a page of a mapped file that is no longer there: most likely one of the
        model's weight files shrank under it (the worker copies its weights out of the files it loads, but another
        library may keep one mapped). The full check tells: damage found is a corrupt model (classified as such,
        repaired by its strategy, retried once) and the timeline says what was found; none leaves the crash as it
        was (a SIGSEGV is not mapped here: under a memory cap it is the allocator's)."""
        if crash.signal_name != "SIGBUS":
            return None
        try:
            report = self.store.health.verify(model_id)
        except (OSError, KintsugiError):  # no manifest to check against: the crash stays what it was
            return None
        if report.ok:
            return None
        found = "; ".join(problem_lines(report))
        self.store.health.found_by(model_id, HealthTrigger.WORKER_CRASH)  # the Models tab: what found it
        inbox.put(
            ServiceEvent(
                Kind.PLAN,
                f"the worker died of SIGBUS while reading {model_id}; a full check of its files found: {found}",
                {"correlation_id": correlation_id, "attempt": attempt, "degraded": False, "changed": False},
            )
        )
        return CorruptModelError(
            f"{model_id}: the worker died of SIGBUS reading its files; a full check found {found}",
            model_id=model_id,
            files=list(report.bad_paths),
        )

    def _check_model(self, model_id: str, model_path: Any) -> None:
        """Before loading: the model's diffusers version and classes are installed, and it is of a family the
        studio runs, its class fitting its components (an image-to-video Wan folder that names ``WanPipeline``
        would load and fail at the first step)."""
        report = self.store.availability.compatibility(model_id)
        report.raise_for_problems(model_id)
        family_of_folder(model_path, model_id)

    def _weights_key(
        self, model_id: str, model_path: Any, correlation_id: str, attempt: int, inbox: queue.Queue[Any]
    ) -> str:
        """What the model's files are now (its revision, and how often they were repaired): the worker loads the
        model again when this differs from its last job's, since a warm model read from the files before a repair
        may hold the damage (it read them at load). The timeline is told of repairs the health watch made in
        the background since the model's last request, and of the reload."""
        data = {"correlation_id": correlation_id, "attempt": attempt, "degraded": False, "changed": False}
        for finding in self.store.health.untold(model_id):
            inbox.put(
                ServiceEvent(Kind.PLAN, f"model health: {finding.sentence()}", {**data, "health": finding.to_dict()})
            )
        weights = f"{Path(model_path).name}:{self.store.health.repair_count(model_id)}"
        last, self._weights_sent[model_id] = self._weights_sent.get(model_id), weights
        if last is not None and last != weights:
            inbox.put(
                ServiceEvent(
                    Kind.PLAN, f"{model_id} is loaded again: its files changed since the worker loaded it", data
                )
            )
        return weights

    @staticmethod
    def _drain(events: Iterator[ServiceEvent]) -> None:
        for _event in events:
            pass
