"""Click-to-idle latency of a cancel: a long job on the tiny model is cancelled at a random point of its denoising,
then of its decoding, through ``GenerationService.cancel``; measured from the cancel call to (a) the end of the
caller's stream (``RequestCancelledError``) and (b) the worker having started the next job (its first event from
the worker process). The time of one step (one decoder chunk) is measured beside it, since a cancel lands at the
end of the step that is running. Target: click-to-idle ≤ step time + 1 s.

    python bench/bench_cancel.py [--frames 33 --size 256 --steps 30 --rounds 5 --seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
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


def cancel_once(service: Any, request: dict[str, Any], phase: str, rng: random.Random, index: int) -> dict[str, float]:
    """One long job cancelled at a random step (and a random moment within it) of ``phase``; the figures."""
    from components import GenerationService
    from recovery.errors import RequestCancelledError

    assert isinstance(service, GenerationService)
    correlation_id = f"bench-{phase}-{index}-{time.monotonic_ns()}"
    stamps: list[float] = []  # arrival of each progress event of ``phase``
    ended = threading.Event()
    outcome: list[BaseException | None] = []
    target = [0]

    def read() -> None:
        try:
            for event in service.generate(request, correlation_id=correlation_id):
                if event.kind == "progress" and event.data.get("phase") == phase:
                    stamps.append(time.perf_counter())
                    if not target[0]:
                        target[0] = rng.randint(2, max(2, event.data["total"] - 1))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            ended.set()

    reader = threading.Thread(target=read)
    reader.start()
    while not (target[0] and len(stamps) >= target[0]):
        if ended.is_set():
            raise RuntimeError(f"the job ended before step {target[0]} of {phase}: make it longer")
        time.sleep(0.001)
    step = stamps[-1] - stamps[-2]
    time.sleep(rng.uniform(0.0, step))  # a click lands anywhere within the running step
    clicked = time.perf_counter()
    service.cancel(correlation_id)
    ended.wait()
    stream_end = time.perf_counter()
    service.worker.stats()  # answered by the worker process once it is idle (memory released) and free for a job
    idle = time.perf_counter()
    if not isinstance(outcome[0], RequestCancelledError):
        raise RuntimeError(f"expected a cancellation, got {outcome[0]!r}")
    # The step running at the click still reports its end (then the cancel is seen): that is "after the step".
    step_end = max([stamp for stamp in stamps if stamp > clicked], default=clicked)
    next_started = 0.0
    for event in service.generate(dict(request, steps=1, num_frames=5, width=64, height=64)):
        if event.kind == "phase" and not next_started:  # the worker process has taken the next job
            next_started = time.perf_counter()
    return {
        "step_s": step,
        "to_step_end_s": step_end - clicked,
        "step_end_to_idle_s": idle - step_end,
        "to_idle_s": idle - clicked,
        "to_stream_end_s": stream_end - clicked,
        "to_next_job_s": next_started - clicked,
    }


def _figures(runs: list[dict[str, float]], key: str) -> str:
    values = [run[key] for run in runs]
    return f"median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from components import GenerationService, Settings, build_embedded_model

    work = Path(tempfile.mkdtemp(prefix="kintsugi-bench-cancel-"))
    settings = Settings(data_dir=work, device="cpu")
    build_embedded_model(settings.embedded_model_dir)
    request = {
        "prompt": "a paper boat on a golden river",
        "width": args.size,
        "height": args.size,
        "num_frames": args.frames,
        "steps": args.steps,
        "seed": 1,
    }
    rng = random.Random(args.seed)
    print(
        f"request: {args.frames}x{args.size}x{args.size}, {args.steps} steps, cpu; {args.rounds} cancels per phase "
        "at a random step and moment"
    )
    with GenerationService(settings) as service:
        service.generate_video(dict(request, steps=1))  # warm the worker
        pid = service.worker.pid
        for phase, unit in (("denoise", "step"), ("decode", "decoder chunk")):
            runs = [
                cancel_once(service, request if phase == "denoise" else dict(request, steps=2), phase, rng, index)
                for index in range(args.rounds)
            ]
            print(f"cancel during {phase} ({args.rounds} runs), one {unit}: {_figures(runs, 'step_s')}")
            for key, label in (
                ("to_step_end_s", f"cancel → end of the running {unit}"),
                ("step_end_to_idle_s", f"end of that {unit} → worker idle"),
                ("to_idle_s", "cancel → worker idle (click-to-idle)"),
                ("to_stream_end_s", "cancel → caller's stream ended"),
                ("to_next_job_s", "cancel → next job started in the worker"),
            ):
                print(f"  {label:<42} {_figures(runs, key)}")
            worst = max(r["step_end_to_idle_s"] for r in runs)
            print(f"  after the current {unit}: max {worst:.3f} s (target <= 1 s)")
        print(f"worker process the same throughout: {service.worker.pid == pid}")


if __name__ == "__main__":
    main()
