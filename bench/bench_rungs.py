"""The time and weight-memory cost of layerwise casting (fp8 storage) on this CPU, the one GPU-ladder rung that runs
here, for ``components.memory.rungs``'s table.

    python bench/bench_rungs.py [--repeats 3] [--layers 4] [--write-docs]
    python bench/bench_rungs.py --cuda          # the offload rungs on a CUDA device (prints "no CUDA device: …")

1. The built-in tiny Wan, a whole generation (9×64², 2 steps) through ``WanGenerator`` with and without
   ``RunOptions(layerwise_casting=True)``: the denoise seconds (median of ``--repeats``, runs alternated) and the
   transformer's parameter bytes.
2. A moderately sized random transformer: the Wan 2.1 1.3B config (``bench/gpu_check.py``) cut to ``--layers``
   blocks, a forward pass of 17×128² in the bf16 it runs in here, cast and not.
3. The share of the real 1.3B transformer's weights (all 30 blocks, built on the meta device: no memory) that
   diffusers keeps out of the cast (its skip patterns: patch embedding, condition embedder, norms).

Prints the figures; ``--write-docs`` replaces the "GPU ladder rungs" section of docs/benchmarks.md.

``--cuda`` measures what the CPU cannot: one denoising forward of a random-weight transformer at the real Wan 2.1
1.3B config (``gpu_check._transformer``) at 33×480×832, without a switch and with each switch of the ladder on the
transformer — group offload (block level, with and without a CUDA stream), layerwise casting, both, sequential
offload (accelerate's ``cpu_offload``) — the seconds (median of ``--repeats``), their ratio to none, and the peak
``torch.cuda.max_memory_allocated``: the figures behind ``components.memory.rungs``'s documented ratios and shares.
Without a CUDA device it prints "no CUDA device: nothing to measure" and exits 0. It has not run on a GPU yet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_check import WAN_1_3B

from components.generation.embedded_model import EMBEDDED_MODEL_ID, build_embedded_model
from components.generation.optimisations import enable_layerwise_casting, parameter_bytes
from components.generation.pipeline import WanGenerator
from components.generation.request import GenerationRequest, RunOptions

SECTION = "## GPU ladder rungs — `bench/bench_rungs.py` (issue 16, item 2)"


def tiny_model(repeats: int) -> dict[str, float]:
    """Denoise seconds and transformer bytes of the tiny Wan, plain and cast, runs alternated."""
    request = GenerationRequest(prompt="a red ball", num_frames=9, width=64, height=64, steps=2)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    sizes: dict[bool, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        model = build_embedded_model(Path(scratch) / "tiny")
        generator = WanGenerator(device="cpu")
        generator.generate(request, Path(scratch) / "warm.mp4", model_path=model)  # load and first-call costs
        for index in range(repeats):
            for cast in (False, True):
                output = generator.generate(
                    request,
                    Path(scratch) / f"{index}-{cast}.mp4",
                    model_path=model,
                    options=RunOptions(layerwise_casting=cast),
                )
                seconds[cast].append(output.timings["denoise"])
                sizes[cast] = parameter_bytes(generator.pipe.transformer)
    assert request.model_id == EMBEDDED_MODEL_ID
    return {
        "plain_s": statistics.median(seconds[False]),
        "cast_s": statistics.median(seconds[True]),
        "plain_bytes": sizes[False],
        "cast_bytes": sizes[True],
    }


def _forward_seconds(model: Any, inputs: dict[str, Any], repeats: int) -> float:
    import torch

    times = []
    with torch.no_grad():
        model(**inputs)  # first call: allocator and kernel warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def random_transformer(layers: int, repeats: int, frames: int, side: int) -> dict[str, float]:
    """One forward of the 1.3B config cut to ``layers`` blocks at ``frames``×``side``² in bf16, plain and cast."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    latent_frames, latent_side = (frames - 1) // 4 + 1, side // 8
    inputs = {
        "hidden_states": torch.randn(1, 16, latent_frames, latent_side, latent_side, dtype=torch.bfloat16),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 64, 4096, dtype=torch.bfloat16),
        "return_dict": False,
    }
    model: Any = WanTransformer3DModel(**{**WAN_1_3B, "num_layers": layers})
    model = model.to(torch.bfloat16).eval()
    plain_bytes = parameter_bytes(model)
    plain = _forward_seconds(model, inputs, repeats)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    cast_bytes = parameter_bytes(model)
    cast = _forward_seconds(model, inputs, repeats)
    tokens = latent_frames * (latent_side // 2) ** 2
    return {"plain_s": plain, "cast_s": cast, "plain_bytes": plain_bytes, "cast_bytes": cast_bytes, "tokens": tokens}


def skipped_share() -> float:
    """The share of the real 1.3B transformer's parameters diffusers leaves uncast (built on the meta device)."""
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        transformer: Any = WanTransformer3DModel(**WAN_1_3B)
        pipe = types.SimpleNamespace(transformer=transformer.to(torch.bfloat16))
    total = sum(p.numel() for p in pipe.transformer.parameters())
    enable_layerwise_casting(pipe)  # the same call as the product makes, on the meta weights
    kept = sum(p.numel() for p in pipe.transformer.parameters() if p.dtype != torch.float8_e4m3fn)
    return kept / total


CUDA_SWITCHES = ("none", "group_offload", "group_offload_no_stream", "layerwise_casting", "group+cast", "sequential")


def _cuda_forward(switch: str, frames: int, height: int, width: int, repeats: int) -> tuple[float, int]:
    """Median seconds and peak bytes of one transformer forward on CUDA with ``switch`` on."""
    import torch
    from accelerate import cpu_offload  # type: ignore[import-untyped]
    from gpu_check import _transformer

    torch.cuda.empty_cache()
    model = _transformer(WAN_1_3B, 0)
    if switch in ("layerwise_casting", "group+cast"):
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if switch in ("group_offload", "group_offload_no_stream", "group+cast"):
        model.to("cpu")
        model.enable_group_offload(
            onload_device=torch.device("cuda"),
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=switch != "group_offload_no_stream",
        )
    if switch == "sequential":
        model.to("cpu")
        cpu_offload(model, torch.device("cuda"), offload_buffers=True)
    latent = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device="cuda", dtype=torch.bfloat16)
    text = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    step = torch.tensor([500], device="cuda")
    times = []
    with torch.no_grad():
        model(latent, step, text, return_dict=False)  # warm-up: kernels, pinned buffers
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            started = time.perf_counter()
            model(latent, step, text, return_dict=False)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    peak = int(torch.cuda.max_memory_allocated())
    del model, latent, text
    torch.cuda.empty_cache()
    return statistics.median(times), peak


def cuda_report(repeats: int, frames: int = 33, height: int = 480, width: int = 832) -> str:
    """The table of the offload and casting rungs on this CUDA device."""
    import torch

    measured = {switch: _cuda_forward(switch, frames, height, width, repeats) for switch in CUDA_SWITCHES}
    base_s, base_peak = measured["none"]
    rows = [
        f"CUDA ({torch.cuda.get_device_name()}): one forward of the Wan 2.1 1.3B transformer (random weights, "
        f"bf16) at {frames}×{height}×{width}, median of {repeats}.",
        "",
        "| switch | seconds | time ratio | peak allocated | share of none |",
        "|---|---:|---:|---:|---:|",
    ]
    for switch, (seconds, peak) in measured.items():
        rows.append(
            f"| {switch} | {seconds:.2f} s | {seconds / base_s:.2f}× | {peak / 2**30:.2f} GiB | "
            f"{peak / base_peak:.0%} |"
        )
    return "\n".join(rows)


def report(tiny: dict[str, float], big: list[tuple[str, dict[str, float]]], share: float, layers: int) -> str:
    def row(name: str, values: dict[str, float]) -> str:
        return (
            f"| {name} | {values['plain_s']:.2f} s | {values['cast_s']:.2f} s | "
            f"{values['cast_s'] / values['plain_s']:.2f}× | {values['plain_bytes'] / 2**20:.1f} MiB → "
            f"{values['cast_bytes'] / 2**20:.1f} MiB ({values['cast_bytes'] / values['plain_bytes']:.0%}) |"
        )

    intro = (
        "Layerwise casting (`RunOptions.layerwise_casting`: the transformer stored in `float8_e4m3fn`, computed in "
        "bf16) is the one GPU-ladder rung that runs on the CPU; the others (model, group and sequential offload) "
        "are CUDA-only and their time ratios in `components/memory/rungs.py` are documented ones, each with its "
        "source. The cast is paid once per forward, so its share falls as the tokens grow. Runs alternate, "
        "median of the repeats; the machine is shared, so single figures move by tens of percent. "
        "`python bench/bench_rungs.py --cuda` measures the offload rungs on a GPU: it has not run on one yet."
    )
    return "\n".join(
        [
            textwrap.fill(intro, width=118),
            "",
            "| transformer | bf16 | fp8 storage, bf16 compute | time ratio | parameter bytes |",
            "|---|---:|---:|---:|---|",
            row("tiny Wan, whole denoise (9×64², 2 steps)", tiny),
            *(
                row(f"Wan 2.1 1.3B config cut to {layers} blocks, one forward ({size}, {int(v['tokens'])} tokens)", v)
                for size, v in big
            ),
            "",
            f"Share of the real Wan 2.1 1.3B transformer (30 blocks) kept in bf16 by diffusers' skip patterns: "
            f"{share:.1%}.",
        ]
    )


def write_docs(text: str, when: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    body = path.read_text()
    section = f"{SECTION}\n\nMeasured {when} on this CPU (`python bench/bench_rungs.py --write-docs`).\n\n{text}\n"
    if SECTION in body:
        start = body.index(SECTION)
        following = body.find("\n## ", start + len(SECTION))
        body = body[:start] + section + (body[following + 1 :] if following != -1 else "")
    else:
        body = body.rstrip("\n") + "\n\n" + section
    path.write_text(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--cuda", action="store_true", help="measure the offload rungs on a CUDA device")
    args = parser.parse_args(argv)
    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: nothing to measure")
            return 0
        print(cuda_report(args.repeats), flush=True)  # pragma: no cover - needs a GPU
        return 0
    share = skipped_share()
    print(f"skipped share of the 1.3B transformer: {share:.1%}", flush=True)
    tiny = tiny_model(args.repeats)
    print(f"tiny: {tiny}", flush=True)
    big = []
    for frames, side in ((17, 128), (17, 256)):
        measured = random_transformer(args.layers, args.repeats, frames, side)
        print(f"random transformer {frames}×{side}²: {measured}", flush=True)
        big.append((f"{frames}×{side}²", measured))
    text = report(tiny, big, share, args.layers)
    print(text)
    if args.write_docs:
        write_docs(text, time.strftime("%Y-%m-%d", time.gmtime()))
    return 0


if __name__ == "__main__":
    # Here, not at import: a test imports this module, and the variables would stay set for every later test.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    raise SystemExit(main())
