"""One real fault per failure type, injected through the real ``GenerationService`` (the chaos matrix).

    from components.chaos.injectors import FAILURE_TYPES, run_fault# a policy over them: components.chaos_views
    with ChaosBench(workdir) as bench:
        report = run_fault("vram_exhaustion", bench)        # a ScenarioReport: types, strategies, outcome, told

Each injector reuses the scenario bench (``components.scenarios``: warm workers per memory cap, a loopback hub
with fault injection, the event-stream reader) and produces its failure for real: a hub answering 503, a
truncated or byte-flipped blob, a worker whose load limit is shorter than a real load, a memory cap, a disk
reserve larger than the free space, a closed port, a throttled link, NaN weights, ``SIGKILL``, a shadowed import,
a value out of bounds, float16 on the CPU, an unwritable model cache, ``torch.compile`` with no C++ compiler (a
gated repository is the permission fault of the spec's scenarios). Every failure type is produced for real here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from components.chaos.loopback_hub import Fault, HubServer
from components.chaos.scenarios import (
    DEMO_REPO,
    RUNNERS,
    SMALL_REQUEST,
    WEIGHTS,
    RequestRun,
    ScenarioBench,
    ScenarioReport,
    build_report,
    hub_client,
    run_request,
)
from components.generation.worker import Worker, WorkerConfig
from components.service import GenerationService
from components.store.download import BandwidthPolicy
from components.views.reports import ServiceEventKind
from recovery.taxonomy import EnhancedFailureType

__all__ = ["FAILURE_TYPES", "FROM_SCENARIOS", "INJECTORS", "ChaosBench", "as_failure_type", "run_fault"]

FAILURE_TYPES: tuple[str, ...] = tuple(t.value for t in EnhancedFailureType)
NAN_REPO = "kintsugi-chaos/nan-wan"
NEWER_REPO = "kintsugi-chaos/future-wan"
I2V_REPO = "kintsugi-chaos/i2v-wan"


class ChaosBench(ScenarioBench):
    """The scenario bench, plus workers with their own configuration or environment for one fault."""

    def __init__(
        self, workdir: str | os.PathLike[str] | None = None, *, data_dir: str | os.PathLike[str] | None = None
    ) -> None:
        """``data_dir`` (metrics, videos, the built model; default ``workdir/data``): the app passes its own, so
        injected faults show in its Metrics tab."""
        root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kintsugi-chaos-"))
        super().__init__(root, Path(data_dir) if data_dir is not None else root / "data")
        self._override: Worker | None = None

    def worker(self, cap: int | None) -> Worker:
        return self._override if self._override is not None else super().worker(cap)

    @contextmanager
    def special_worker(self, config: WorkerConfig, environ: Mapping[str, str] | None = None) -> Iterator[Worker]:
        """A worker of its own for one fault, started with ``environ`` on top of this process's environment."""
        saved = {name: os.environ.get(name) for name in environ or {}}
        os.environ.update(environ or {})
        worker = Worker(config)
        try:
            worker.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self._override = worker
        try:
            yield worker
        finally:
            self._override = None
            worker.close()

    def __enter__(self) -> ChaosBench:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _as(
    name: str, fault: str, run: RequestRun, started: float, *, hub: HubServer | None = None, notes: tuple[str, ...] = ()
) -> ScenarioReport:
    """A scenario report for one failure type (``build_report`` titles by scenario, so the title is set after)."""
    return replace(
        build_report("download_failure", fault, [run], started, hub=hub, notes=notes), scenario=name, title=name
    )


def _model_copy(bench: ScenarioBench, folder: str, edit: Callable[[Path], None]) -> Path:
    """A copy of the tiny model under the bench, changed by ``edit``."""
    target = bench.workdir / "models" / folder
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bench.model_dir, target)
    edit(target)
    return target


def _edit_index(**changes: Any) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        index = folder / "model_index.json"
        index.write_text(json.dumps({**json.loads(index.read_text()), **changes}, indent=2))

    return edit


def _hub_model(bench: ScenarioBench, name: str, repo: str, folder: Path, fault: str) -> ScenarioReport:
    started = time.perf_counter()
    with hub_client(no_backoff=True), HubServer() as hub:
        hub.add_revision(repo, folder)
        with bench.service(name, endpoint=hub.url) as service:
            run = run_request(service, {**SMALL_REQUEST, "model_id": repo})
        return _as(name, fault, run, started, hub=hub)


# -- the injectors, one per failure type --------------------------------------------------------------------------


def _version_mismatch(bench: ScenarioBench) -> ScenarioReport:
    folder = _model_copy(bench, "future", _edit_index(_diffusers_version="99.0.0", _class_name="WanPipelineV99"))
    return _hub_model(
        bench,
        "model_version_mismatch",
        NEWER_REPO,
        folder,
        "model_index.json names diffusers 99.0.0 and a pipeline class (WanPipelineV99) the installed diffusers lacks",
    )


def _compatibility(bench: ScenarioBench) -> ScenarioReport:
    folder = _model_copy(bench, "i2v", _edit_index(_class_name="WanImageToVideoPipeline"))
    return _hub_model(
        bench,
        "model_compatibility_error",
        I2V_REPO,
        folder,
        "an image-to-video model (WanImageToVideoPipeline) asked for text-to-video",
    )


def _nan_weights(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / WEIGHTS
    tensors = load_file(path)
    save_file(
        {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
        path,
        metadata={"format": "pt"},
    )


def _pipeline_error(bench: ScenarioBench) -> ScenarioReport:
    folder = _model_copy(bench, "nan", _nan_weights)
    return _hub_model(
        bench,
        "generation_pipeline_error",
        NAN_REPO,
        folder,
        "NaN written into every transformer weight: the denoised latents are NaN",
    )


def _loading_timeout(bench: ChaosBench) -> ScenarioReport:
    started = time.perf_counter()
    with (
        hub_client(no_backoff=True),
        bench.special_worker(WorkerConfig(device="cpu", load_timeout_s=0.01)),
        bench.service("model_loading_timeout") as service,
    ):
        run = run_request(service, dict(SMALL_REQUEST))
    return _as(
        "model_loading_timeout", "a worker whose load limit (0.01 s) is shorter than the real load", run, started
    )


def _integrity(bench: ScenarioBench) -> ScenarioReport:
    started = time.perf_counter()
    size = (bench.model_dir / WEIGHTS).stat().st_size
    fault = (
        f"the hub serves {WEIGHTS} with one byte flipped at {size // 2} on every request: the downloaded "
        "content does not hash to its name"
    )
    with hub_client(no_backoff=True), bench.hub() as hub:
        hub.inject(Fault(kind="flip", path=WEIGHTS, after_bytes=size // 2, times=None))
        with bench.service("model_integrity_failure", endpoint=hub.url) as service:
            run = run_request(service, {**SMALL_REQUEST, "model_id": DEMO_REPO})
        return _as("model_integrity_failure", fault, run, started, hub=hub)


def _storage(bench: ScenarioBench) -> ScenarioReport:
    started = time.perf_counter()
    with (
        hub_client(no_backoff=True),
        bench.hub() as hub,
        bench.service("storage_space_insufficient", endpoint=hub.url) as service,
    ):
        free = shutil.disk_usage(bench.workdir).free
        service.store.availability.reserve_bytes = free + 2**40
        run = run_request(service, {**SMALL_REQUEST, "model_id": DEMO_REPO})
        return _as(
            "storage_space_insufficient",
            f"the store's disk pre-flight keeps {free + 2**40} bytes free, more than the disk has",
            run,
            started,
            hub=hub,
        )


def _bandwidth(bench: ScenarioBench) -> ScenarioReport:
    started = time.perf_counter()
    fault = f"the hub throttles {WEIGHTS} to 20 kB/s; the store's deadline for a transfer is 1 s"
    with hub_client(no_backoff=True), bench.hub() as hub:
        hub.inject(Fault(kind="throttle", path=WEIGHTS, bytes_per_s=20_000, times=None))
        with bench.service("bandwidth_limitation", endpoint=hub.url) as service:
            service.store.downloader.bandwidth = BandwidthPolicy(min_bytes_per_s=100_000, window_s=0.5, deadline_s=1.0)
            run = run_request(service, {**SMALL_REQUEST, "model_id": DEMO_REPO})
        return _as("bandwidth_limitation", fault, run, started, hub=hub)


class _KillOnProgress:
    """The service, with the worker process ``SIGKILL``-ed at the first denoising step it reports."""

    def __init__(self, service: GenerationService) -> None:
        self.service, self.killed = service, False

    def generate(self, request: Mapping[str, Any]) -> Iterator[Any]:
        for event in self.service.generate(request):
            if event.kind is ServiceEventKind.PROGRESS and not self.killed:
                worker = self.service.worker
                process = worker._process if isinstance(worker, Worker) else None  # the bench runs a local worker
                if process is not None and process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                    self.killed = True
            yield event


def _system_resource(bench: ScenarioBench) -> ScenarioReport:
    started = time.perf_counter()
    with hub_client(), bench.service("system_resource_error") as service:
        killer = _KillOnProgress(service)
        request = {**SMALL_REQUEST, "num_frames": 17, "width": 128, "height": 128, "steps": 6}
        run = run_request(killer, request)  # type: ignore[arg-type]
    return _as(
        "system_resource_error",
        "the worker process SIGKILL-ed at its first denoising step",
        run,
        started,
        notes=() if killer.killed else ("the worker finished before it could be killed",),
    )


def _dependency(bench: ChaosBench) -> ScenarioReport:
    started = time.perf_counter()
    shadow = bench.workdir / "shadow"
    (shadow / "imageio_ffmpeg").mkdir(parents=True, exist_ok=True)
    (shadow / "imageio_ffmpeg" / "__init__.py").write_text(
        'raise ImportError("imageio_ffmpeg is shadowed by the chaos harness")\n'
    )
    with (
        hub_client(),
        bench.special_worker(WorkerConfig(device="cpu"), {"PYTHONPATH": str(shadow)}),
        bench.service("dependency_missing") as service,
    ):
        run = run_request(service, dict(SMALL_REQUEST))
    return _as(
        "dependency_missing",
        "the worker's PYTHONPATH shadows imageio_ffmpeg with a package that raises ImportError",
        run,
        started,
    )


def _hardware_optimisation(bench: ChaosBench) -> ScenarioReport:
    started = time.perf_counter()
    # A fresh inductor cache, so nothing compiled earlier on this machine can stand in for the compiler.
    environ = {
        "CXX": str(bench.workdir / "no-compiler" / "c++"),
        "TORCHINDUCTOR_CACHE_DIR": str(Path(tempfile.mkdtemp(prefix="inductor-", dir=bench.workdir))),
    }
    with (
        hub_client(),
        bench.special_worker(WorkerConfig(device="cpu"), environ),
        bench.service("hardware_optimization_failure", compile=True) as service,
    ):
        run = run_request(service, dict(SMALL_REQUEST))
    return _as(
        "hardware_optimization_failure",
        "KINTSUGI_COMPILE=on in a worker whose C++ compiler (CXX) does "
        "not exist: torch.compile fails at the first denoising step",
        run,
        started,
    )


@contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """``folder`` made unwritable for real, and restored afterwards; yields how. A normal user loses write
    permission; root, whom permission bits do not stop, gets the immutable attribute (``chattr +i``)."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(mode & ~0o222)
        try:
            yield "write permission removed"
        finally:
            folder.chmod(mode)
        return
    subprocess.run(["chattr", "+i", os.fspath(folder)], check=True, capture_output=True)
    try:
        yield "immutable (chattr +i): not even root can create files in it"
    finally:
        subprocess.run(["chattr", "-i", os.fspath(folder)], check=True, capture_output=True)


def _unwritable_cache(bench: ScenarioBench) -> ScenarioReport:
    started = time.perf_counter()
    with (
        hub_client(no_backoff=True),
        bench.hub() as hub,
        bench.service("permission_denied", endpoint=hub.url) as service,
    ):
        with read_only(service.store.cache.cache_dir) as how:
            run = run_request(service, {**SMALL_REQUEST, "model_id": DEMO_REPO})
        return _as(
            "permission_denied",
            f"the model cache folder made unwritable ({how}) before {DEMO_REPO} is downloaded into it",
            run,
            started,
            hub=hub,
        )


def _invalid(bench: ScenarioBench) -> ScenarioReport:
    started = time.perf_counter()
    with hub_client(), bench.service("invalid_parameters") as service:
        run = run_request(service, {**SMALL_REQUEST, "width": 5000})
    return _as("invalid_parameters", "a request with width 5000 (at most 1024)", run, started)


def _unsupported(bench: ChaosBench) -> ScenarioReport:
    started = time.perf_counter()
    with (
        hub_client(),
        bench.special_worker(WorkerConfig(device="cpu", dtype="float16")),
        bench.service("unsupported_operation") as service,
    ):
        run = run_request(service, dict(SMALL_REQUEST))
    return _as("unsupported_operation", "a worker configured for float16 on the CPU", run, started)


#: Failure types whose fault is one of the spec's six scenarios (``components.scenarios.RUNNERS``), run as such.
FROM_SCENARIOS: Mapping[str, str] = {
    "model_download_failure": "download_failure",
    "model_corruption_detected": "model_corruption",
    "vram_exhaustion": "vram_exhaustion",
    "network_connectivity_loss": "network_loss",
}


def as_failure_type(name: str, report: ScenarioReport) -> ScenarioReport:
    """A scenario's report titled by the failure type it produces (``FROM_SCENARIOS``)."""
    return replace(report, scenario=name, title=name)


def _scenario(name: str) -> Callable[[ChaosBench], ScenarioReport]:
    return lambda bench: as_failure_type(name, RUNNERS[FROM_SCENARIOS[name]](bench))


INJECTORS: Mapping[str, Callable[[ChaosBench], ScenarioReport]] = {
    "model_download_failure": _scenario("model_download_failure"),
    "model_corruption_detected": _scenario("model_corruption_detected"),
    "model_version_mismatch": _version_mismatch,
    "model_loading_timeout": _loading_timeout,
    "model_integrity_failure": _integrity,
    "model_compatibility_error": _compatibility,
    "vram_exhaustion": _scenario("vram_exhaustion"),
    "storage_space_insufficient": _storage,
    "network_connectivity_loss": _scenario("network_connectivity_loss"),
    "bandwidth_limitation": _bandwidth,
    "hardware_optimization_failure": _hardware_optimisation,
    "generation_pipeline_error": _pipeline_error,
    "system_resource_error": _system_resource,
    "dependency_missing": _dependency,
    "invalid_parameters": _invalid,
    "unsupported_operation": _unsupported,
    "permission_denied": _unwritable_cache,
}


def run_fault(name: str, bench: ChaosBench) -> ScenarioReport:
    """Inject the fault for failure type ``name`` through a real service on ``bench`` and report what happened."""
    if name not in INJECTORS:
        raise ValueError(f"`name` must be one of {', '.join(INJECTORS)} (got {name!r})")
    return INJECTORS[name](bench)
