"""What a streamed decode saves: the address space each family's tiny model needs to denoise, to decode as the
pipeline does (the whole video, then its post-processed copies) and to decode chunk by chunk into the mp4 writer.

    python bench/bench_decode.py [--families wan2.1-t2v,ltx] [--sizes 9x512x512,33x256x256] [--steps 2]

One fresh process per family and size (``VmPeak`` cannot be reset): it loads the model, denoises once, then
decodes the kept latents streamed and then plain, reading ``VmPeak`` after each phase. Printed in MiB over the
address space after loading (what a worker memory cap counts, less the model's weights, which are tiny here):
the peak through denoising, through the streamed decode, through the plain decode, and the window between —
under a cap inside the window the plain decode runs out of memory and the streamed one fits. A phase that stays
below an earlier peak shows that peak (its own need is at most that). "Streamed" is the decode retry's setting:
tiled too (tiles sized from the frame) for the families whose retry is (``Family.tiled_decode_retry``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MALLOC_ARENA_MAX", "2")  # as the worker runs

MiB = 2**20
SIZES = ("5x512x512", "9x512x512", "9x384x384")


def _model_and_request(family: Any, size: str, steps: int, scratch: Path) -> tuple[Path, Any]:
    """The family's tiny model (built in ``scratch``) and the request ``size`` (FxWxH) for it, with a start image
    where the family takes one."""
    from components.generation.embedded_model import build_tiny_model
    from components.generation.request import GenerationRequest

    frames, width, height = (int(part) for part in size.split("x"))
    model = build_tiny_model(family.tiny_model_id, scratch / family.name)
    image = None
    if family.takes_image:
        from PIL import Image

        image = str(scratch / "start.png")
        Image.new("RGB", (width, height), (200, 40, 40)).save(image)
    request = GenerationRequest(
        prompt="a lantern in the rain",
        num_frames=frames,
        width=width,
        height=height,
        steps=steps,
        seed=7,
        model_id=family.tiny_model_id,
        image=image,
    )
    return model, request


def _measure(family_name: str, size: str, steps: int, scratch: Path) -> dict[str, float]:
    """In this (fresh) process: the peaks of one run's phases over the address space after loading."""
    from components.generation.families import family_by_name
    from components.generation.pipeline import VideoGenerator
    from components.generation.request import RunOptions
    from recovery.procfs import process_status

    def peak() -> int:
        return int(process_status("VmPeak")["VmPeak"])

    family = family_by_name(family_name)
    tiled = family.tiled_decode_retry  # the decode retry streams tiled for this family
    model, request = _model_and_request(family, size, steps, scratch)
    generator = VideoGenerator(device="cpu", dtype="bfloat16")
    generator.load(model, family.tiny_model_id)
    base = int(process_status("VmSize")["VmSize"])
    figures: dict[str, float] = {}
    kept: list = []

    def at(phase: str) -> None:
        if phase == "decode" and not kept:  # denoised: its peak, and its latents for the second decode
            figures["denoise"] = (peak() - base) / MiB
            kept.append(generator._latents)

    for name in ("streamed", "plain"):  # streamed first: the plain decode's copies must not set its peak
        output = generator.generate(
            request,
            scratch / f"{name}.mp4",
            model_path=model,
            options=RunOptions(streamed_decode=name == "streamed", vae_tiling=name == "streamed" and tiled),
            on_phase=at,
        )
        figures[name] = (peak() - base) / MiB
        figures[f"{name}_s"] = output.timings["decode"] + output.timings["export"]
        generator._latents = kept[0]  # the plain decode decodes the same latents, without denoising again
    return figures


def _worker_caps(family_name: str, size: str, steps: int, scratch: Path) -> tuple[int, int]:
    """The worker memory cap a run needs, plain and streamed, each in a fresh worker as the tests run them (the
    dtype probe in its first job, the cap counted from its address space once ready, before loading)."""
    from components.generation.families import family_by_name
    from components.generation.request import RunOptions
    from components.generation.worker import Worker, WorkerConfig
    from recovery.procfs import process_status

    family = family_by_name(family_name)
    model, request = _model_and_request(family, size, steps, scratch)
    worker = Worker(WorkerConfig(device="cpu", dtype="bfloat16"))
    needs = []
    try:
        for streaming in (False, True):
            worker.restart()
            base = int(worker.stats()["vm_size"])
            # The decode retry's setting: streamed, and tiled where the family's retry is (``tiled_decode_retry``)
            options = RunOptions(streamed_decode=streaming, vae_tiling=streaming and family.tiled_decode_retry)
            list(worker.run(request, scratch / "bench.mp4", model_path=model, options=options))
            assert worker.pid is not None
            needs.append(int(process_status("VmPeak", pid=worker.pid)["VmPeak"]) - base)
    finally:
        worker.close()
    return needs[0], needs[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--families", default="")
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--worker", action="store_true", help="the worker caps each way needs (fresh workers, as the tests run)"
    )
    args = parser.parse_args(argv)
    if args.worker:
        print(f"{'family':<18} {'size':<11} {'plain':>6} {'streamed':>9} {'midpoint':>9}  (worker cap, MiB)")
        with tempfile.TemporaryDirectory() as scratch:
            for name in args.families.split(","):
                for size in args.sizes.split(","):
                    plain, streamed = (need / MiB for need in _worker_caps(name, size, args.steps, Path(scratch)))
                    print(
                        f"{name:<18} {size:<11} {plain:6.0f} {streamed:9.0f} {(plain + streamed) / 2:9.0f}", flush=True
                    )
        return 0
    if args.one:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(_measure(args.one[0], args.one[1], args.steps, Path(scratch))))
        return 0
    from components.generation.families import FAMILIES

    wanted = args.families.split(",") if args.families else [family.name for family in FAMILIES]
    print(
        f"{'family':<18} {'size':<11} {'denoise':>8} {'streamed':>9} {'plain':>7} {'window':>7}  (MiB)  "
        f"{'streamed s':>10} {'plain s':>7}"
    )
    for name in wanted:
        for size in args.sizes.split(","):
            done = subprocess.run(
                [sys.executable, __file__, "--one", name, size, "--steps", str(args.steps)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if done.returncode:
                print(f"{name:<18} {size:<11} failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            got = json.loads(done.stdout.strip().splitlines()[-1])
            lower = max(got["denoise"], got["streamed"])
            print(
                f"{name:<18} {size:<11} {got['denoise']:8.0f} {got['streamed']:9.0f} {got['plain']:7.0f} "
                f"{got['plain'] - lower:7.0f}         {got['streamed_s']:10.2f} {got['plain_s']:7.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
