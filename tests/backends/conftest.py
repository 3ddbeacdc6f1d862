"""One local Ray instance for the session (two logical GPUs, every socket on 127.0.0.1) and one service on a pool
of two replicas (one torch thread each, a real memory cap): Ray's start and the replicas' model load are paid once.

Skipped, with the reason, only where the ``ray`` extra is not installed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from components.backends.ray_backend import ReplicaPool
    from components.service import GenerationService

CAP = 340 * 2**20  # as tests/test_service_memory.py: 9×64² fits, 33×512² does not
RAY_MISSING = "the ray extra is not installed (pip install kintsugi-video[ray])"


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[Path]:
    """A local Ray instance with two logical GPUs, its session files in a short temporary folder (Ray's socket paths
    must stay under the AF_UNIX limit); shut down at the end, with what it wrote under ``~/.ray``."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    from components.backends.ray_backend import connect

    home = Path.home() / ".ray"
    before = set(home.iterdir()) if home.is_dir() else None
    temp = Path(tempfile.mkdtemp(prefix="kray", dir="/tmp"))
    try:
        assert connect(None, logical_gpus=2, num_cpus=2, temp_dir=temp), "Ray was already running in this process"
        yield temp
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if before is None:
            shutil.rmtree(home, ignore_errors=True)
        elif home.is_dir():
            for path in set(home.iterdir()) - before:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def ray_service(
    ray_instance: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[GenerationService]:
    """A started service whose worker is a pool of two Ray replicas under a 340 MiB cap, memory planning off (so a
    request too big for the cap runs and meets a real out-of-memory), the hub a closed loopback port. Module-scoped:
    the replicas (about 500 MiB each) are gone once their tests are, not held for the rest of the suite."""
    from components.backends.ray_backend import ReplicaPool
    from components.generation.worker import WorkerConfig
    from components.service import GenerationService
    from components.settings import Settings
    from components.store.download import RetryPolicy
    from components.store.model_store import ModelStore
    from tests.support.app_process import free_port

    data_dir = tmp_path_factory.mktemp("ray-service")
    settings = Settings(
        data_dir=data_dir,
        hub_cache_dir=data_dir / "hub",
        device="cpu",
        worker_memory_cap=CAP,
        memory_planning=False,
        backend="ray",
    )
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    store = ModelStore(
        settings.hub_cache_dir,
        settings.store_state_dir,
        endpoint=f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1),
        catalog=(),
    )
    config = WorkerConfig(
        device="cpu", dtype=settings.dtype, memory_cap=CAP, precision_cache=str(data_dir / "precision_probe.json")
    )
    pool = ReplicaPool(config, replicas=2, threads=1)
    with GenerationService(settings, worker=pool, store=store) as started:
        for replica in pool.replicas:  # both warm before the first test, so that timings compare like with like
            replica.stats()
        yield started


@pytest.fixture
def pool(ray_service: GenerationService) -> ReplicaPool:
    from components.backends.ray_backend import ReplicaPool

    worker = ray_service.worker
    assert isinstance(worker, ReplicaPool)
    return worker
