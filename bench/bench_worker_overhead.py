"""What the worker process and the service cost: a warm generation through ``GenerationService`` (worker process,
recovery loop, events) against a direct in-process ``WanPipeline`` call on the same request, export included on
both sides, measured alternately in one run. Target: ratio ≤ 1.03.

    python bench/bench_worker_overhead.py [--frames 33 --size 256 --steps 4 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import torch
    from diffusers import WanPipeline
    from diffusers.utils import export_to_video

    from components import GenerationRequest, GenerationService, Settings, build_embedded_model

    work = Path(tempfile.mkdtemp(prefix="kintsugi-bench-"))
    settings = Settings(data_dir=work, device="cpu")
    model = build_embedded_model(settings.embedded_model_dir)
    request = GenerationRequest(
        prompt="a paper boat on a golden river",
        width=args.size,
        height=args.size,
        num_frames=args.frames,
        steps=args.steps,
        seed=1,
    )

    pipe = WanPipeline.from_pretrained(model, dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)

    def direct(index: int) -> None:
        frames = pipe(
            prompt=request.prompt,
            height=request.height,
            width=request.width,
            num_frames=request.num_frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            generator=torch.Generator().manual_seed(request.seed),
            output_type="np",
        ).frames[0]
        export_to_video(list(frames), str(work / f"direct-{index}.mp4"), fps=request.fps)

    with GenerationService(settings) as service:
        service.generate_video(request)  # warm the worker
        direct(-1)  # warm the in-process pipeline
        served, baseline = [], []
        # The worker and this process would compete for the 2 cores if run together: alternate, one at a time.
        torch_threads = torch.get_num_threads()
        for index in range(args.rounds):
            started = time.perf_counter()
            service.generate_video(request)
            served.append(time.perf_counter() - started)
            torch.set_num_threads(torch_threads)
            started = time.perf_counter()
            direct(index)
            baseline.append(time.perf_counter() - started)

    med_served, med_direct = statistics.median(served), statistics.median(baseline)
    print(
        f"request: {request.num_frames}x{request.width}x{request.height}, {request.steps} steps, bf16, cpu, "
        f"{args.rounds} rounds alternating"
    )
    print(f"direct WanPipeline + export  median {med_direct:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in baseline)})")
    print(f"service + worker process     median {med_served:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in served)})")
    print(f"ratio service/direct: {med_served / med_direct:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
