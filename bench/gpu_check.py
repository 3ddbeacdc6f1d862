"""The prepared CUDA check (issue 16): the memory planner and the GPU ladder on a real GPU, at real model sizes.

    python bench/gpu_check.py                  # prints the report
    python bench/gpu_check.py --write-docs     # … and puts it in docs/benchmarks.md ("GPU check" section)
    python bench/gpu_check.py --cards 8,24 --frames 81 --steps 4 [--skip-14b]

Without a CUDA device it prints "no CUDA device: nothing to check" and exits 0 (CI and CPU machines).

On a CUDA device, within about 8 minutes on one H200:
1. Builds a Wan 2.1 T2V 1.3B model folder with random weights at the published configs: the transformer at the
   repo's ``transformer/config.json`` (dim 1536, 12 heads × 128, ffn 8960, 30 layers), the real Wan 2.1 VAE
   (``AutoencoderKLWan()`` defaults). The text encoder is a stand-in: a one-layer UMT5 with the real d_model
   (4096), so prompts encode to the shape the transformer takes (the real UMT5-XXL is 5.7 B parameters; its
   memory is not part of what this check measures — say so when reading the figures).
2. Emulates smaller cards with ``torch.cuda.set_per_process_memory_fraction`` (the worker's memory cap on CUDA)
   and runs ``--frames``×480×832 through the real ``GenerationService`` with memory planning on and off.
3. Reports per card and planning setting: the planner's prediction before the run against the measured peak
   (``torch.cuda.max_memory_allocated`` in the worker), whether the first try fitted, OOMs rescued, the rungs the
   ladder used (the result's changes), the time of each attempt.
4. Unless ``--skip-14b``: the 14B transformer config (dim 5120, 40 heads, ffn 13824, 40 layers) built in-process
   with random weights, one denoising step at 480×832 and 720×1280 from ``prompt_embeds``: the measured peak.

Nothing here has a hard-coded figure: every number printed is measured in this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GiB = 2**30
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## GPU check — `bench/gpu_check.py` (issue 16)"
MODEL_ID = "kintsugi/gpu-check-wan2.1-1.3b-random"

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
# Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json
WAN_14B = {**WAN_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _random_init(module: Any, seed: int) -> Any:
    """Random weights, made on the GPU (a 14B transformer initialised on the CPU would take minutes)."""
    import torch

    generator = torch.Generator(device="cuda").manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
    return module


def _transformer(config: dict[str, Any], seed: int) -> Any:
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    model = model.to_empty(device="cuda").to(torch.bfloat16)
    return _random_init(model, seed).eval()


def build_model_folder(target: Path) -> Path:
    """The 1.3B folder: real transformer and VAE configs, random weights, a stand-in text encoder (see above)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    from components.generation.embedded_model import char_t5_tokenizer

    tokenizer = char_t5_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=4096,
            d_kv=64,
            d_ff=1024,
            num_layers=1,
            num_heads=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).to("cuda", torch.bfloat16)
    _random_init(text_encoder, 2)
    vae = _random_init(AutoencoderKLWan().to("cuda"), 1)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=scheduler,
        transformer=_transformer(WAN_1_3B, 0),
    )
    pipe.save_pretrained(target, safe_serialization=True)
    del pipe
    torch.cuda.empty_cache()
    return target


def device_facts() -> list[str]:
    import torch

    from components.memory.hardware import probe_hardware

    free, total = torch.cuda.mem_get_info()
    state = probe_hardware()
    lines = [
        f"- device: {torch.cuda.get_device_name(0)}, {total / GiB:.1f} GiB, {free / GiB:.1f} GiB free at start;"
        f" torch {torch.__version__}, CUDA {torch.version.cuda}",
    ]
    for gpu in state.get("gpus", ()):
        others = gpu.get("processes") or []
        lines.append(f"- NVML: {gpu.get('name')} · other processes: {len(others)}")
    return lines


def run_service(folder: Path, data_dir: Path, cap_gib: float, planning: bool, request: Any) -> dict[str, Any]:
    """One request through the real service under an emulated card of ``cap_gib``."""
    from components.generation.request import RunOptions
    from components.service import GenerationService
    from components.settings import Settings
    from components.views.reports import ServiceEventKind

    settings = Settings(
        data_dir=data_dir,
        hub_cache_dir=data_dir / "hub",
        device="cuda",
        dtype="bfloat16",
        worker_memory_cap=int(cap_gib * GiB),
        memory_planning=planning,
        recovery_timeout_s=420.0,
    )
    row: dict[str, Any] = {"card_gib": cap_gib, "planning": planning}
    with GenerationService(settings) as service:
        service.store.register_local_source(MODEL_ID, lambda _target: folder, install=True)
        row["predicted"] = service.planner.estimate(request, RunOptions())
        started = time.perf_counter()
        result = None
        try:
            for event in service.generate(request):
                if event.kind is ServiceEventKind.RESULT:
                    result = event.data["result"]
        except Exception as exc:  # a request that ended without a video is a figure here, not a crash
            row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        row["seconds"] = time.perf_counter() - started
    if result is not None:
        output = result.output
        row.update(
            ok=True,
            attempts=result.attempts,
            first_try_fit=result.attempts == 1 and not result.changed,
            measured_peak=output.peak_memory_bytes,
            made=f"{output.frames}×{output.width}×{output.height}",
            changes=list(result.changes),
            attempt_s=[round(record.duration_s, 1) for record in result.attempt_records],
            oom_rescued=any(
                record.failure_type is not None and record.failure_type.value == "vram_exhaustion"
                for record in result.attempt_records
            ),
        )
    else:
        row["ok"] = False
    return row


def transformer_step_peak(config: dict[str, Any], frames: int, height: int, width: int) -> tuple[int, float]:
    """Peak bytes and seconds of one denoising step of a transformer at ``config`` from ``prompt_embeds``."""
    import torch

    torch.cuda.empty_cache()
    model = _transformer(config, 3)
    latent = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device="cuda", dtype=torch.bfloat16)
    text = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with torch.no_grad():
        model(latent, torch.tensor([500], device="cuda"), text, return_dict=False)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = int(torch.cuda.max_memory_allocated())
    del model, latent, text
    torch.cuda.empty_cache()
    return peak, seconds


def _gib(value: int | None) -> str:
    return "—" if value is None else f"{value / GiB:.2f} GiB"


def report(rows: list[dict[str, Any]], big: list[str], facts: list[str], args: argparse.Namespace) -> str:
    lines = [SECTION, "", f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `{' '.join(sys.argv)}`", ""]
    lines += facts
    lines += [
        "",
        f"Wan 2.1 T2V 1.3B (real transformer and VAE configs, random weights; one-layer 4096-wide text-encoder "
        f"stand-in), {args.frames}×480×832, {args.steps} steps, through `GenerationService`:",
        "",
        "| card | planning | predicted | measured peak | first try fit | attempts | OOM rescued | made | rungs | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['card_gib']:g} GiB | {'on' if row['planning'] else 'off'} | {_gib(row.get('predicted'))} | "
            f"{_gib(row.get('measured_peak'))} | {row.get('first_try_fit', '—')} | {row.get('attempts', '—')} | "
            f"{row.get('oom_rescued', '—')} | {row.get('made', row.get('error', 'no video'))} | "
            f"{'; '.join(row.get('changes', ())) or '—'} | {row['seconds']:.0f} |"
        )
    planned = [row for row in rows if row["planning"]]
    if planned:
        fitted = sum(1 for row in planned if row.get("first_try_fit"))
        lines += ["", f"First-try fit with planning on: {fitted}/{len(planned)}."]
    if big:
        lines += ["", "Wan 2.1 14B transformer config, one denoising step from `prompt_embeds`:", "", *big]
    return "\n".join(lines) + "\n"


def write_docs(text: str) -> None:
    current = DOCS.read_text()
    start = current.find(SECTION)
    if start < 0:
        DOCS.write_text(current.rstrip() + "\n\n" + text)
        return
    end = current.find("\n## ", start + len(SECTION))
    DOCS.write_text(current[:start] + text + (current[end + 1 :] if end >= 0 else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="put the report in docs/benchmarks.md")
    parser.add_argument("--cards", default="8,12,24", help="emulated card sizes in GiB, comma-separated")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-14b", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # here, not at import: a test imports this module
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not cuda_available():
        print("no CUDA device: nothing to check")
        return 0

    from components.generation.request import GenerationRequest

    facts = device_facts()
    rows: list[dict[str, Any]] = []
    big: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kintsugi-gpu-check-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        folder = build_model_folder(root / "wan-1.3b")
        facts.append(f"- 1.3B folder built and saved in {time.perf_counter() - started:.0f} s")
        request = GenerationRequest(
            prompt="a red fox running through snow",
            width=832,
            height=480,
            num_frames=args.frames,
            steps=args.steps,
            seed=1,
            model_id=MODEL_ID,
        )
        for cap in (float(c) for c in args.cards.split(",") if c.strip()):
            for planning in (True, False):
                row = run_service(folder, root / f"data-{cap:g}-{planning}", cap, planning, request)
                rows.append(row)
                print(row, flush=True)
        if not args.skip_14b:
            for height, width in ((480, 832), (720, 1280)):
                try:
                    peak, seconds = transformer_step_peak(WAN_14B, args.frames, height, width)
                    big.append(f"- {args.frames}×{height}×{width}: peak {_gib(peak)}, one step {seconds:.1f} s")
                except Exception as exc:
                    big.append(f"- {args.frames}×{height}×{width}: {type(exc).__name__}: {str(exc)[:160]}")
                print(big[-1], flush=True)
    text = report(rows, big, facts, args)
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
