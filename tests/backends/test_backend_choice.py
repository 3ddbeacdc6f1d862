"""Which backend the wiring builds: the local worker without Ray ever imported, Ray's pool when chosen, and a clear
error naming the extra when Ray is chosen but not installed. Each runs in a fresh interpreter (``sys.modules`` of
this one already holds whatever other tests imported)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_the_local_backend_never_imports_ray(tmp_path: Path) -> None:
    """A service built and wired with the default settings is today's ``Worker``, and ``ray`` stays unimported."""
    done = _python(
        f"""
        import sys
        from components.service import GenerationService
        from pathlib import Path
        from components.settings import Settings
        from components.generation.worker import Worker
        service = GenerationService(Settings(data_dir=Path({str(tmp_path)!r}), device="cpu"))
        assert type(service.worker) is Worker, type(service.worker)
        assert "ray" not in sys.modules, "ray was imported"
        print("ok")
        """
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_choosing_ray_without_the_extra_names_it(tmp_path: Path) -> None:
    """With ``ray`` not importable, ``backend="ray"`` fails at wiring with ``DependencyMissingError`` naming
    ``pip install kintsugi-video[ray]``."""
    done = _python(
        f"""
        import sys
        sys.modules["ray"] = None  # what an interpreter without the extra sees: ImportError on import
        from components.service import GenerationService
        from pathlib import Path
        from components.settings import Settings
        from recovery.errors import DependencyMissingError
        try:
            GenerationService(Settings(data_dir=Path({str(tmp_path)!r}), device="cpu", backend="ray"))
        except DependencyMissingError as exc:
            print(exc.install, "|", exc)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    install, _, message = done.stdout.strip().partition(" | ")
    assert install == "pip install kintsugi-video[ray]" and "pip install kintsugi-video[ray]" in message


def test_choosing_ray_builds_a_replica_pool_that_starts_nothing_yet(tmp_path: Path) -> None:
    """``backend="ray"`` wires a ``ReplicaPool`` with the settings' replica count and address; building it starts
    no Ray (that waits for ``start``)."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install kintsugi-video[ray])")
    from components.backends.ray_backend import ReplicaPool
    from components.generation.worker import WorkerConfig
    from components.settings import Settings
    from components.wiring import build_backend

    settings = Settings(data_dir=tmp_path, backend="ray", ray_replicas=3, ray_address="ray://head:10001")
    pool = build_backend(settings, WorkerConfig(memory_cap=2**30))
    assert isinstance(pool, ReplicaPool)
    assert (pool.size, pool.address, pool.config.memory_cap, pool.replicas) == (3, "ray://head:10001", 2**30, [])


def test_both_backends_satisfy_the_protocol() -> None:
    """Today's ``Worker`` and the Ray ``ReplicaPool`` both are ``WorkerBackend``s (no Ray needed to check)."""
    from components.backends import ReplicaPool, WorkerBackend
    from components.generation.worker import Worker

    assert isinstance(Worker(), WorkerBackend) and isinstance(ReplicaPool(replicas=1), WorkerBackend)
