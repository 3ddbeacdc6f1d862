"""Scale-out on Ray: throughput of N concurrent requests against 1, 2 and 4 replicas, and the per-request overhead of
the Ray backend against the local worker process. Target: overhead ratio ≤ 1.05.

Every replica (and the local worker) runs one torch thread, so the replica count, not thread contention, is what
varies; all requests go through ``GenerationService`` (journal, recovery loop, events) on the tiny model.

    python bench/bench_scale.py [--requests 4 --replicas 1 2 4 --frames 9 --size 64 --steps 2 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["OMP_NUM_THREADS"] = "1"  # the local worker inherits it: one thread, as each replica


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4, help="concurrent requests per throughput round")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the overhead comparison")
    args = parser.parse_args()

    import ray

    from components.backends.ray_backend import ReplicaPool, connect
    from components.generation.embedded_model import build_embedded_model
    from components.generation.request import GenerationRequest
    from components.service import GenerationService
    from components.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="kray-bench-", dir="/tmp"))  # short: Ray's socket paths live under it
    model = build_embedded_model(work / "model" / "tiny-wan-random")
    request = GenerationRequest(
        prompt="a paper boat", width=args.size, height=args.size, num_frames=args.frames, steps=args.steps, seed=1
    )

    def _service(name: str, worker: ReplicaPool | None) -> GenerationService:
        settings = Settings(data_dir=work / name, device="cpu")
        shutil.copytree(model, settings.embedded_model_dir)
        return GenerationService(settings, worker=worker)

    home_ray = Path.home() / ".ray"
    had_home_ray = home_ray.exists()
    connect(None, logical_gpus=max(args.replicas), num_cpus=os.cpu_count(), temp_dir=work / "ray")
    try:
        _measure(args, request, _service)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        if not had_home_ray:  # Ray's token, written by this run
            shutil.rmtree(home_ray, ignore_errors=True)


def _measure(args: argparse.Namespace, request: Any, _service: Any) -> None:
    from components.backends.ray_backend import ReplicaPool
    from components.generation.worker import WorkerConfig

    print(f"{os.cpu_count()} CPU cores; {args.frames}×{args.size}² {args.steps} steps; one torch thread per replica")

    # -- throughput -------------------------------------------------------------------------------------------------
    single: float | None = None
    for count in args.replicas:
        pool = ReplicaPool(WorkerConfig(device="cpu"), replicas=count, threads=1)
        service = _service(f"pool-{count}", pool)
        with service:
            warm = [threading.Thread(target=service.generate_video, args=(request,)) for _ in range(count)]
            for thread in warm:  # every replica loads the model once before the clock starts
                thread.start()
            for thread in warm:
                thread.join()
            started = time.perf_counter()
            threads = [threading.Thread(target=service.generate_video, args=(request,)) for _ in range(args.requests)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
        rate = args.requests / elapsed
        single = single or rate
        print(
            f"{count} replica(s): {args.requests} requests in {elapsed:.2f} s = {rate:.2f} requests/s "
            f"({rate / single:.2f}× one replica)"
        )

    # -- per-request overhead: the same request, one at a time, alternating Ray (1 replica) and the local worker --
    pool = ReplicaPool(WorkerConfig(device="cpu"), replicas=1, threads=1)
    on_ray, local = _service("overhead-ray", pool), _service("overhead-local", None)
    timings: dict[str, list[float]] = {"ray": [], "local": []}
    with on_ray, local:
        on_ray.generate_video(request)
        local.generate_video(request)
        for _round in range(args.rounds):
            for name, service in (("ray", on_ray), ("local", local)):
                started = time.perf_counter()
                service.generate_video(request)
                timings[name].append(time.perf_counter() - started)
    ray_s, local_s = statistics.median(timings["ray"]), statistics.median(timings["local"])
    print(
        f"one request, median of {args.rounds}: Ray replica {ray_s:.3f} s, local worker {local_s:.3f} s "
        f"→ ratio {ray_s / local_s:.3f} (target ≤ 1.05)"
    )


if __name__ == "__main__":
    main()
