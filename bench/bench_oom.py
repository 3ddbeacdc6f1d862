"""Out-of-memory recovery under a real worker memory cap: our planner-driven ladder against two baselines.

    python bench/bench_oom.py [--cap-mib 340] [--steps 2] [--decode-steps 40]
    python bench/bench_oom.py --calibrate      # re-measure the shipped calibration points (minutes)

A grid of requests (sides × frames) runs under one memory cap three ways, each in its own capped worker:
no recovery; a naive halving ladder (halve the frames, then the sides, until it runs); and the memory ladder
(``components.memory_ladder``) through ``recovery.EnhancedErrorRecovery``. Printed:

* share rescued — requests that end with a video (target ≥ 99 %);
* mean attempts to success (target ≤ 1.2 adjusted attempts: the first try is the one that ran out of memory,
  so we count tries after it; 1.0 = rescued by the first adjustment);
* pixel·frames kept as a share of the best setting that really fits, found by search along the same ladder
  order (starting from our choice, walking up until a real run fails; target ≥ 80 %);
* decode OOMs recovered without re-denoising (ours): of the requests whose decode ran out of memory with the
  latents kept, the share that ended with a video decoded from those latents (the streamed decode's retry; no
  denoising step recomputed);
* time to recover a decode OOM (decode the kept latents, streamed) vs a full rerun of the same setting
  (target ≥ 5× faster).

    python bench/bench_oom.py --methods ours   # only the memory ladder's grid (and the decode OOM figures)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from components.generation.embedded_model import build_embedded_model
from components.generation.request import (
    GenerationRequest,
    RunOptions,
    join_parameters,
    split_parameters,
)
from components.generation.worker import Worker, WorkerConfig
from components.memory.adapters import MemoryLadder, PreviewDegrader, WorkerMemoryFreer
from components.memory.calibration import calibrate
from components.memory.hardware import HardwareProbe, cpu_kind
from components.memory.ladder import _candidates, _variants
from components.memory.planner import MemoryPlanner
from recovery import Adjustment, EnhancedErrorRecovery, ErrorContext, set_testing
from recovery.errors import OutOfMemoryError

MiB = 2**20
SIDES = (256, 384, 512)
FRAMES = (9, 17, 33)


class NaiveHalving:
    """The baseline ladder: on each OOM halve the frames (to 4k+1), and once at 5 frames halve the sides."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def adjust(self, ctx: ErrorContext, parameters: Any) -> Adjustment | None:
        request, options = split_parameters(parameters)
        self.worker.restart()  # same clean slate as ours
        if request.num_frames > 5:
            frames = max(5, ((request.num_frames - 1) // 2) // 4 * 4 + 1)
            new = replace(request, num_frames=frames)
        elif request.width > 64:
            new = replace(request, width=max(16, request.width // 32 * 16), height=max(16, request.height // 32 * 16))
        else:
            return None
        return Adjustment(join_parameters(new, options), (f"halved to {new.num_frames}×{new.width}×{new.height}",))


def _shape(request: GenerationRequest) -> tuple[int, int, int]:
    return request.num_frames, request.width, request.height


def _run(worker: Worker, model: Path, out: Path, request: GenerationRequest, options: RunOptions) -> dict[str, Any]:
    output = list(worker.run(request, out, model_path=model, options=options))[-1].output
    assert output is not None
    return output.to_dict()


def _fits_for_real(
    worker: Worker, model: Path, out: Path, request: GenerationRequest, options: RunOptions, cache: dict
) -> bool:
    key = (request.num_frames, request.width, request.height, options)
    if key not in cache:
        worker.restart()
        try:
            _run(worker, model, out, request, options)
            cache[key] = True
        except OutOfMemoryError:
            cache[key] = False
    return cache[key]


def _best_for_real(worker: Worker, model: Path, out: Path, asked: GenerationRequest, ours: tuple, cache: dict) -> int:
    """pixel·frames of the first setting, in ladder order, that really fits — searched upward from ours."""
    order = [c for _rung, c in _candidates(asked, max(1, math.ceil(asked.num_frames / 4)), 0.5)]
    order = [(c, o) for c in order for o in _variants(c, RunOptions(), "cpu")]
    plain = (ours[0], replace(ours[1], streamed_decode=False))  # the order's options have no streamed decode
    start = next((i for i, (c, o) in enumerate(order) if (c, o) == plain), len(order))
    best = ours
    for candidate in reversed(order[:start]):  # walk up toward the request while real runs fit
        if not _fits_for_real(worker, model, out, *candidate, cache):
            break
        best = candidate
    request = best[0]
    return request.num_frames * request.width * request.height


def run_grid(
    method: str, worker: Worker, model: Path, out_dir: Path, cap: int, steps: int, planner: MemoryPlanner | None
) -> list[dict[str, Any]]:
    rows = []
    for side in SIDES:
        for frames in FRAMES:
            asked = GenerationRequest(prompt="bench", num_frames=frames, width=side, height=side, steps=steps, seed=1)
            params = join_parameters(asked, RunOptions())
            started = time.perf_counter()
            if method == "none":
                try:
                    value = _run(worker, model, out_dir / "none.mp4", asked, RunOptions())
                    ok, attempts, final = True, 1, params
                except OutOfMemoryError:
                    worker.restart()
                    value, ok, attempts, final = None, False, 1, params
                decode_oom = False
            else:
                if method == "naive":
                    engine = EnhancedErrorRecovery(
                        adjuster=NaiveHalving(worker),
                        user_intervention_threshold=10,
                        max_recovery_attempts=10,
                        sleep=lambda _s: None,
                    )
                else:
                    freer = WorkerMemoryFreer(worker, planner=planner)
                    engine = EnhancedErrorRecovery(
                        adjuster=MemoryLadder(planner, budget=cap, freer=freer),
                        freer=freer,
                        degrader=PreviewDegrader(planner, budget=cap),
                        probe=HardwareProbe(cap),
                        sleep=lambda _s: None,
                    )

                def attempt(p: Any, info: Any) -> dict[str, Any]:
                    request, options = split_parameters(p)
                    value = _run(worker, model, out_dir / f"{method}.mp4", request, options)
                    if planner is not None and method == "ours":
                        planner.record(request, options, None, True, memory_cap=cap)
                    return value

                outcome = engine.run(attempt, params, model_id=asked.model_id)
                ok, attempts, final, value = outcome.ok, len(outcome.attempts), dict(outcome.parameters), outcome.value
                decode_oom = any("during decode" in (a.error or "") for a in outcome.attempts)
                if not ok:
                    worker.restart()
            rows.append(
                dict(
                    method=method,
                    asked=asked,
                    ok=ok,
                    attempts=attempts,
                    final=final,
                    value=value,
                    seconds=time.perf_counter() - started,
                    decode_oom=decode_oom,
                    from_kept_latents=bool(ok and decode_oom and (value or {}).get("denoise_skipped")),
                )
            )
            got = split_parameters(final)[0]
            print(
                f"  {method:5s} {frames:2d}×{side}² → {'ok ' if ok else 'NO '} attempts={attempts} "
                f"final={got.num_frames}×{got.width}×{got.height} "
                f"tiling={final.get('options', {}).get('vae_tiling')} "
                f"streamed={final.get('options', {}).get('streamed_decode')} {time.perf_counter() - started:5.1f}s",
                flush=True,
            )
    return rows


def decode_oom_timing(model: Path, out_dir: Path, cap: int, steps: int) -> tuple[float, float] | None:
    """(seconds of the retry that decodes the kept latents, seconds of a full rerun of the same setting), or None
    when 5×512² does not run out of memory in its decode under this cap."""
    worker = Worker(WorkerConfig(device="cpu", memory_cap=cap))
    try:
        asked = GenerationRequest(prompt="bench", num_frames=5, width=512, height=512, steps=steps, seed=3)
        try:
            _run(worker, model, out_dir / "d.mp4", asked, RunOptions())
            return None
        except OutOfMemoryError as exc:
            if not (exc.data["phase"] == "decode" and exc.data["latents_kept"]):
                return None
        started = time.perf_counter()
        retry = _run(worker, model, out_dir / "d.mp4", asked, RunOptions(streamed_decode=True))
        retry_s = time.perf_counter() - started
        assert retry["denoise_skipped"]
        worker.restart()
        _run(
            worker,
            model,
            out_dir / "warm.mp4",
            replace(asked, num_frames=1, width=64, height=64, steps=1),
            RunOptions(),
        )  # load the model first: a rerun in a warm worker is the fair comparison
        started = time.perf_counter()
        _run(worker, model, out_dir / "d.mp4", asked, RunOptions(streamed_decode=True))
        return retry_s, time.perf_counter() - started
    finally:
        worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-mib", type=int, default=340)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--decode-steps", type=int, default=40)
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--methods", default="none,naive,ours", help="which grids to run (comma-separated)")
    args = parser.parse_args()
    set_testing(True)
    cap = args.cap_mib * MiB
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_embedded_model(folder / "tiny-wan-random")
        if args.calibrate:
            # The table for this CPU's kind (components.memory.hardware.cpu_kind); each point the larger of two runs.
            print(f"# hardware {cpu_kind()}", flush=True)
            worker = Worker(WorkerConfig(device="cpu"))
            sizes = [(f, s, s) for s in (256, 384, 512) for f in (9, 13, 17, 25, 33)]
            sizes += [(9, 128, 128), (33, 128, 128), (5, 512, 512), (9, 640, 640), (9, 512, 288)]
            first, second = (calibrate(worker, model, sizes) for _ in range(2))
            for one, two in zip(first, second):
                needs = [m.need_bytes for m in (one, two) if m.need_bytes]
                need = f"{round(max(needs) / MiB)}" if needs else "None"
                print(f"({one.num_frames}, {one.width}, {one.height}, {one.vae_tiling}, {need}),", flush=True)
            worker.close()
            return
        print(f"grid {len(SIDES)}×{len(FRAMES)} under a {args.cap_mib} MiB cap, {args.steps} steps", flush=True)
        results: dict[str, list[dict[str, Any]]] = {}
        for method in args.methods.split(","):
            worker = Worker(WorkerConfig(device="cpu", memory_cap=cap))
            planner = MemoryPlanner(folder / "memory.json") if method == "ours" else None
            try:
                results[method] = run_grid(method, worker, model, folder, cap, args.steps, planner)
            finally:
                worker.close()

        print("searching the best setting that really fits, from ours upward ...", flush=True)
        search = Worker(WorkerConfig(device="cpu", memory_cap=cap))
        cache: dict = {}
        shares = []
        try:
            for row in results.get("ours", []):
                if row["ok"] and row["attempts"] > 1:
                    request, options = split_parameters(row["final"])
                    if _shape(request) == _shape(row["asked"]):  # the size asked (e.g. a streamed decode)
                        shares.append(1.0)
                        continue
                    best = _best_for_real(search, model, folder / "s.mp4", row["asked"], (request, options), cache)
                    shares.append(request.num_frames * request.width * request.height / best)
        finally:
            search.close()

        timing = decode_oom_timing(model, folder, cap, args.decode_steps)

        print(f"\nresults (cap {args.cap_mib} MiB, {len(SIDES) * len(FRAMES)} requests, tiny Wan on this CPU)")
        print(f"{'method':8s} {'rescued':>8s} {'OOM first':>10s} {'adjusted tries':>15s} {'seconds':>8s}")
        for method, rows in results.items():
            failed_first = [r for r in rows if r["attempts"] > 1 or not r["ok"]]
            rescued = [r for r in failed_first if r["ok"]]
            share = len(rescued) / len(failed_first) if failed_first else 1.0
            tries = statistics.mean(r["attempts"] - 1 for r in rescued) if rescued else float("nan")
            total = sum(r["seconds"] for r in rows)
            print(f"{method:8s} {share:8.0%} {len(failed_first):10d} {tries:15.2f} {total:8.1f}")
        if shares:
            print(
                f"pixel·frames kept vs the best that really fits (ours): mean {statistics.mean(shares):.0%}, "
                f"min {min(shares):.0%} over {len(shares)} recovered requests"
            )
        decode_ooms = [r for r in results.get("ours", []) if r["decode_oom"]]
        if decode_ooms:
            kept = sum(r["from_kept_latents"] for r in decode_ooms)
            print(
                f"decode OOMs recovered without re-denoising (ours): {kept}/{len(decode_ooms)} "
                f"({kept / len(decode_ooms):.0%})"
            )
        else:
            print("decode OOMs recovered without re-denoising (ours): no request ran out of memory in its decode")
        if timing is None:
            print(f"decode OOM timing: 5×512² does not run out of memory in its decode under {args.cap_mib} MiB")
        else:
            retry_s, rerun_s = timing
            print(
                f"decode OOM, 5×512², {args.decode_steps} steps: retry from kept latents {retry_s:.1f}s vs full "
                f"rerun {rerun_s:.1f}s → {rerun_s / retry_s:.1f}× faster"
            )


if __name__ == "__main__":
    main()
