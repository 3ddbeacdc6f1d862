"""The time and weight-memory cost of layerwise casting (fp8 storage) on this CPU, the one GPU-ladder rung that runs
here, for ``components.memory.rungs``'s table.

    python bench/bench_rungs.py [--repeats 3] [--layers 4] [--write-docs]

1. The built-in tiny Wan, a whole generation (9×64², 2 steps) through ``WanGenerator`` with and without
   ``RunOptions(layerwise_casting=True)``: the denoise seconds (median of ``--repeats``, runs alternated) and the
   transformer's parameter bytes.
2. A moderately sized random transformer: the Wan 2.1 1.3B config (``bench/gpu_check.py``) cut to ``--layers``
   blocks, a forward pass of 17×128² in the bf16 it runs in here, cast and not.
3. The share of the real 1.3B transformer's weights (all 30 blocks, built on the meta device: no memory) that
   diffusers keeps out of the cast (its skip patterns: patch embedding, condition embedder, norms).

Prints the figures; ``--write-docs`` replaces the "GPU ladder rungs" section of docs/benchmarks.md.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

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
        "median of the repeats; the machine is shared, so single figures move by tens of percent."
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
    args = parser.parse_args(argv)
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
    raise SystemExit(main())
