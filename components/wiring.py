"""Builds the parts of a ``GenerationService`` from ``Settings``: the one place that knows every concrete class.

    parts = build_parts(Settings.from_env())         # store, worker, probe, planner, engine, metrics, journal
    parts = build_parts(settings, worker=shared)      # a caller's own worker (the scenario bench shares them)

The worker is the backend ``KINTSUGI_BACKEND`` names: ``local``, one supervised process (Ray is not imported), or
``ray``, a pool of replicas on Ray (``components.backends``), with the same config.

The engine's ports are the sub-systems' adapters: the model store (``components.store.port``), the failed speed-up
switch then the memory ladder (``components.generation.optimisations``, ``components.memory.adapters``), the worker
restarter and the labelled preview. One hardware key names this machine for the planner and the circuit breaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from components.backends.protocol import WorkerBackend
from components.generation.embedded_model import EMBEDDED_MODEL_ID, ensure_embedded_model, ensure_tiny_model
from components.generation.families import tiny_model_ids
from components.generation.optimisations import OptimisationSwitch
from components.generation.timing import TimeModel
from components.generation.worker import Worker, WorkerConfig
from components.journal import JournalKeeper, RequestJournal
from components.memory.adapters import MemoryLadder, PreviewDegrader, WorkerMemoryFreer
from components.memory.hardware import HardwareProbe, hardware_key
from components.memory.planner import MemoryPlanner
from components.memory.rungs import WeightBook
from components.settings import Settings
from components.store.download import RetryPolicy
from components.store.health import HealthWatch
from components.store.model_store import ModelStore
from components.store.port import StorePort
from components.views.reports import Reporter
from recovery.engine import EnhancedErrorRecovery
from recovery.metrics import MetricsStore
from recovery.ports import ResourceFreer
from recovery.strategies import FirstAdjuster

__all__ = ["ServiceParts", "build_backend", "build_parts"]


@dataclass
class ServiceParts:
    """Everything a ``GenerationService`` orchestrates."""

    settings: Settings
    store: ModelStore
    worker: WorkerBackend  # the local worker process, or a pool of Ray replicas
    probe: HardwareProbe
    device: str  # where generation runs: cpu or cuda
    hardware_key: str  # this machine, for the planner's profiles and the breaker's keys
    planner: MemoryPlanner
    optimisations: OptimisationSwitch
    metrics: MetricsStore
    engine: EnhancedErrorRecovery
    reporter: Reporter
    keeper: JournalKeeper  # the request journal and the crash safety over it
    timing: TimeModel  # how long each phase takes here (ETAs, the plan notice's predicted times)
    watch: HealthWatch  # re-checks installed models in the background (started and stopped by the service)
    weights: WeightBook = field(default_factory=WeightBook)  # weight bytes per component: the ladder's switch rungs


def build_parts(
    settings: Settings,
    *,
    worker: WorkerBackend | None = None,
    store: ModelStore | None = None,
    engine: EnhancedErrorRecovery | None = None,
    freer: ResourceFreer | None = None,
) -> ServiceParts:
    """The parts for ``settings``; a given ``worker``, ``store``, ``engine`` or ``freer`` replaces the default.
    Metrics are recorded in either case: an injected engine gets the metrics store as a listener."""
    cap = settings.worker_memory_cap
    # Few, quick retries inside the store: the engine's own retry strategy backs off between whole attempts.
    store = store or ModelStore(
        settings.hub_cache_dir, settings.store_state_dir, retry=RetryPolicy(attempts=3, base_s=0.5)
    )
    # The embedded model enters the hub cache like any model; its "download" is a build from code.
    store.register_local_source(
        EMBEDDED_MODEL_ID, lambda _target: ensure_embedded_model(settings.embedded_model_dir), install=False
    )
    # The other families' tiny models likewise, each built the first time a request asks for it.
    for tiny_id in tiny_model_ids():
        if tiny_id != EMBEDDED_MODEL_ID:
            store.register_local_source(
                tiny_id, partial(_build_tiny, tiny_id, settings.tiny_model_dir(tiny_id)), install=False
            )
    worker = worker or build_backend(
        settings,
        WorkerConfig(
            device=settings.device,
            dtype=settings.dtype,
            memory_cap=cap,
            load_timeout_s=settings.load_timeout_s,
            precision_cache=str(settings.data_dir / "precision_probe.json"),
        ),
    )
    probe = HardwareProbe(cap)
    hardware = probe()
    device = str(hardware.get("device", "cpu")) if settings.device == "auto" else settings.device
    key = hardware_key(hardware, device=device)
    # The memory planner predicts each request's need from measurements and learns from every run.
    planner = MemoryPlanner(settings.data_dir / "memory_calibration.json", hardware=key, dtype=settings.dtype)
    # The time model learns each phase's time from every run, on the same key.
    timing = TimeModel(settings.data_dir / "run_timings.json", hardware=key, dtype=settings.dtype)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsStore(settings.metrics_db)
    # Speed-ups that failed on this machine are turned off by the engine and stay off for later requests.
    optimisations = OptimisationSwitch()
    weights = WeightBook()  # told by the service once a model is cached; predicts the offload and fp8 rungs
    if engine is None:
        memory_freer = WorkerMemoryFreer(worker, planner=planner)
        engine = EnhancedErrorRecovery(
            settings.max_recovery_attempts,
            settings.recovery_timeout_s,
            settings.user_intervention_threshold,
            store=StorePort(store, probe),
            adjuster=FirstAdjuster(
                (
                    optimisations,
                    # The ladder's last rung, a smaller model, is the catalogue's smaller sibling (with consent).
                    MemoryLadder(
                        planner,
                        budget=cap,
                        device=device,
                        freer=memory_freer,
                        smaller=store.fallbacks.smaller_model,
                        weights=weights.of,
                    ),
                )
            ),
            freer=freer or memory_freer,
            degrader=PreviewDegrader(planner, budget=cap, device=device, weights=weights.of),
            probe=probe,
            metrics=metrics,
        )
    else:
        engine.bus.subscribe(metrics)
    reporter = Reporter(engine.categorize, str(settings.data_dir))
    keeper = JournalKeeper(
        RequestJournal(settings.journal_db), reporter, retention_days=settings.journal_retention_days
    )
    watch = HealthWatch(store.health, settings.health_interval_s)
    return ServiceParts(
        settings,
        store,
        worker,
        probe,
        device,
        key,
        planner,
        optimisations,
        metrics,
        engine,
        reporter,
        keeper,
        timing,
        watch,
        weights,
    )


def build_backend(settings: Settings, config: WorkerConfig) -> WorkerBackend:
    """The backend ``settings.backend`` names, running jobs with ``config``. Ray is imported only for ``ray`` (and
    only when the pool starts), so the local mode never loads it."""
    if settings.backend != "ray":
        return Worker(config)
    from components.backends.ray_backend import ReplicaPool, import_ray

    import_ray()  # without the extra: a clear error naming it, here rather than at the first request
    return ReplicaPool(config, replicas=settings.ray_replicas or None, address=settings.ray_address)


def _build_tiny(model_id: str, folder: Path, _target: Path) -> Path:
    return ensure_tiny_model(model_id, folder)
