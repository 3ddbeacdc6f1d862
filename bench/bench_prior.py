"""The physical memory prior against measured peaks, for models the planner never measured.

    nice python bench/bench_prior.py                 # measure (minutes), compare, print; cache in data/bench-prior
    python bench/bench_prior.py --reuse              # compare against the cached measurements only (seconds)
    python bench/bench_prior.py --fit                # print prior coefficients fitted to the cached measurements

Every measurement runs in a fresh worker process (``components.generation.worker``, the product's own path:
precision probe, family load, denoise, decode, export), and reads the worker's ``VmPeak`` at each phase change it
reports: the peak address-space growth over the worker's ready size *through* load, denoise and decode — the unit
the worker memory cap counts (``components.memory.calibration``); ``VmHWM`` (peak RSS) is kept beside it.

Models: each built-in tiny family the planner has no calibration of (all but the embedded tiny Wan), and the real
Wan 2.1 1.3B configs with random weights — the transformer at its published config (30 layers, 1536 wide, bf16,
2.84 GB) over the tiny VAE, and the real VAE (``AutoencoderKLWan()`` defaults, 127 M parameters) under the tiny
transformer — each with a text encoder of the real width and one layer (UMT5-XXL would add 11 GB of weights that
the prior counts from headers like any other; its activations at 512 tokens are small).

Printed: predicted vs measured per phase, median and worst absolute error (targets ≤ 20 % and ≤ 40 %), with the
prior as shipped and leave-one-model-out (coefficients refitted without the model they predict); and, under a
worker memory cap, the share of requests that fit on the first try when planned from the prior against planned
from the borrowed tiny-Wan calibration (target ≥ 95 %).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_check import WAN_1_3B  # the published Wan 2.1 1.3B transformer config (bench/ is on the path)

from components.generation.embedded_model import EMBEDDED_MODEL_ID, build_tiny_model
from components.generation.families import FAMILIES
from components.generation.request import GenerationRequest, RunOptions
from components.generation.worker import Worker, WorkerConfig
from components.memory.calibration import prior_coefficients
from components.memory.hardware import cpu_kind
from components.memory.prior import ModelPrior, PriorCoefficients, read_prior
from recovery.procfs import process_status

MiB = 2**20
ROOT = Path(__file__).resolve().parent.parent / "data" / "bench-prior"
CACHE = ROOT / "measurements.json"
TINY_SIZES = ((9, 128, 128), (9, 256, 256), (17, 256, 256), (9, 384, 384), (9, 512, 512))
TILED_SIZES: tuple[tuple[int, int, int], ...] = ()  # a tiled tiny decode at 512² took 400 s here: none
REAL_TRANSFORMER = "bench/wan2.1-1.3b-transformer"
REAL_VAE = "bench/wan2.1-vae"
REAL_TRANSFORMER_SIZES = ((9, 128, 128), (9, 256, 256), (33, 256, 256))
REAL_VAE_SIZES = ((9, 128, 128), (9, 256, 256), (9, 384, 384))


def build_real(folder: Path, *, transformer: str) -> Path:
    """A WanPipeline folder with random weights: the real 1.3B transformer over the tiny VAE (``"real"``), or the
    tiny transformer over the real VAE (``"tiny"``); a one-layer UMT5 of the transformer's text width."""
    if (folder / "model_index.json").exists():
        return folder
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from components.generation.families.tokenizers import char_t5_tokenizer
    from components.generation.families.wan import TRANSFORMER_CONFIG, VAE_CONFIG

    config = WAN_1_3B if transformer == "real" else TRANSFORMER_CONFIG
    tokenizer = char_t5_tokenizer()
    torch.manual_seed(1)
    torch.set_default_dtype(torch.bfloat16)  # 1.4 G parameters: built in bf16 (2.8 GB), not fp32 (5.7 GB)
    try:
        model = WanTransformer3DModel(**config).eval()  # type: ignore[attr-defined]
    finally:
        torch.set_default_dtype(torch.float32)
    torch.manual_seed(2)
    vae = AutoencoderKLWan(**(VAE_CONFIG if transformer == "real" else {})).eval()  # type: ignore[attr-defined]
    torch.manual_seed(3)
    encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=int(config["text_dim"]),
            d_kv=32,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, scheduler=scheduler, transformer=model)
    pipe.save_pretrained(folder, safe_serialization=True)  # type: ignore[attr-defined]
    return folder


def models() -> dict[str, tuple[Path, tuple[tuple[int, int, int], ...], int, float]]:
    """model id → (folder, sizes, steps, guidance), building what is missing."""
    found: dict[str, tuple[Path, tuple[tuple[int, int, int], ...], int, float]] = {}
    for family in FAMILIES:
        if family.needs_image:
            continue  # image-to-video families share their text-to-video sibling's shapes; no image here
        folder = ROOT / "tiny" / family.tiny_model_id.rsplit("/", 1)[-1]
        if not (folder / "model_index.json").exists():
            build_tiny_model(family.tiny_model_id, folder)
        found[family.tiny_model_id] = (folder, TINY_SIZES, 2, 5.0)
    # One step without guidance: memory does not grow with steps (and Wan runs guidance as a second call).
    found[REAL_TRANSFORMER] = (
        build_real(ROOT / "wan21-1.3b-transformer", transformer="real"),
        REAL_TRANSFORMER_SIZES,
        1,
        1.0,
    )
    found[REAL_VAE] = (build_real(ROOT / "wan21-vae", transformer="tiny"), REAL_VAE_SIZES, 1, 1.0)
    return found


def measure(
    worker: Worker,
    folder: Path,
    model_id: str,
    size: tuple[int, int, int],
    options: RunOptions,
    steps: int,
    guidance: float,
) -> dict[str, Any]:
    """One run in a fresh worker (``VmPeak`` cannot be reset), as ``calibration.measure_once`` measures: peak
    address-space growth over the ready worker, read from here at each phase change the worker reports (at most
    one poll late: a short phase's peak may include the start of the next) and at the end (exact)."""
    frames, width, height = size
    worker.restart()
    base = int(worker.stats()["vm_size"])
    pid = worker.pid
    assert pid is not None  # started by the restart
    base_rss = process_status("VmRSS", pid=pid)["VmRSS"]
    request = GenerationRequest(
        prompt="a prior",
        width=width,
        height=height,
        num_frames=frames,
        steps=steps,
        guidance_scale=guidance,
        model_id=model_id,
    )
    peaks: dict[str, int] = {}
    rss: dict[str, int] = {}
    order = {"denoise": "load", "decode": "denoise", "export": "decode"}
    dtypes: dict[str, str] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for event in worker.run(request, Path(scratch) / "out.mp4", model_path=folder, options=options):
            if event.kind == "phase" and event.data.get("phase") in order:
                status = process_status("VmPeak", "VmHWM", pid=pid)
                peaks[order[event.data["phase"]]] = status["VmPeak"] - base
                rss[order[event.data["phase"]]] = status["VmHWM"] - base_rss
            if event.output is not None:
                dtypes = dict(event.output.component_dtypes)
        status = process_status("VmPeak", "VmHWM", pid=pid)  # with the export: the run's whole need
        peaks["total"], rss["total"] = status["VmPeak"] - base, status["VmHWM"] - base_rss
    return dict(
        model_id=model_id,
        num_frames=frames,
        width=width,
        height=height,
        vae_tiling=options.vae_tiling,
        guidance=guidance,
        steps=steps,
        peak=peaks,
        rss=rss,
        seconds=round(time.perf_counter() - started, 1),
        component_dtypes=dtypes,
    )


def run_measurements(only: set[str] | None) -> list[dict[str, Any]]:
    saved: list[dict[str, Any]] = json.loads(CACHE.read_text()) if CACHE.exists() else []
    done = {(m["model_id"], m["num_frames"], m["width"], m["height"], m["vae_tiling"]) for m in saved}
    worker = Worker(WorkerConfig(device="cpu", dtype="bfloat16", precision_cache=str(ROOT / "precision.json")))
    try:
        for model_id, (folder, sizes, steps, guidance) in models().items():
            if only and model_id not in only:
                continue
            plan = [(s, RunOptions()) for s in sizes]
            if model_id not in (REAL_TRANSFORMER, REAL_VAE):
                plan += [(s, RunOptions(vae_tiling=True)) for s in TILED_SIZES]
            if model_id == REAL_VAE:  # above its 256-px tile: tiling acts
                plan += [((9, 384, 384), RunOptions(vae_tiling=True))]
            for size, options in plan:
                if (model_id, *size, options.vae_tiling) in done:
                    continue
                item = measure(worker, folder, model_id, size, options, steps, guidance)
                print(json.dumps(item), flush=True)
                saved.append(item)
                CACHE.write_text(json.dumps(saved, indent=1))
    finally:
        worker.close()
    return saved


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PHASES = ("load", "denoise", "decode")
KINDS = ("AutoencoderKLWan", "AutoencoderKLCogVideoX", "AutoencoderKLHunyuanVideo", "AutoencoderKLLTXVideo")
#: Activations per latent token of the 1.3B transformer measured before (DESIGN.md: ≈ 0.07 MiB a token in RSS),
#: over its feature ((4·1536 + 8960) × 2 bytes): used when no real transformer was measured at two sizes.
DESIGN_ACTIVATIONS = 0.07 * MiB / ((4 * 1536 + 8960) * 2)


def prior_of(item: dict[str, Any], folders: dict[str, Path]) -> ModelPrior:
    widths = {name: _DTYPE_BYTES.get(dtype, 2) for name, dtype in item.get("component_dtypes", {}).items()}
    prior = read_prior(folders[item["model_id"]], 2, widths)
    assert prior is not None, item["model_id"]
    return prior


def _features(item: dict[str, Any], prior: ModelPrior) -> dict[str, float]:
    return prior.features(
        item["num_frames"],
        item["width"],
        item["height"],
        guidance_scale=item["guidance"],
        vae_tiling=item["vae_tiling"],
    )


def _nnls(rows: list[list[float]], targets: list[float], scales: list[float] | None = None) -> list[float]:
    """Non-negative least squares in relative error (each row divided by ``scales``, by default its target):
    drop the most negative term and solve again until none is negative."""
    import numpy as np

    by = np.array(scales or targets)
    design = np.array(rows) / by[:, None]
    goal = np.array(targets) / by
    columns = len(rows[0])
    active = [i for i in range(columns) if design[:, i].any()]
    solution = np.zeros(columns)
    while active:
        scale = np.abs(design[:, active]).max(axis=0)
        found, *_ = np.linalg.lstsq(design[:, active] / scale, goal, rcond=None)
        found = found / scale
        if (found >= 0).all():
            solution[active] = found
            break
        active.pop(int(np.argmin(found)))
    return [float(v) for v in solution]


def fit(items: list[dict[str, Any]], folders: dict[str, Path]) -> PriorCoefficients:
    """The coefficients, one group of rows each: load peaks give the fixed part and the loading factor; the
    denoise peaks of models with next to no weights the first computation's part; the real transformer's
    resident growth (RSS, where the load's transient mapping hides it from VmPeak) the activations; and decode
    peaks above the denoise peak the decoder (per VAE class), the masked VAE attention and the output."""
    import numpy as np

    priors = [(item, prior_of(item, folders)) for item in items]
    features = [(item, _features(item, prior)) for item, prior in priors]
    fixed, loading, mapping = _nnls(
        [[1.0, f["weights"], f["stored"]] for _i, f in features], [i["peak"]["load"] for i, _f in features]
    )
    light = [i for i, f in features if f["weights"] < 50 * MiB]
    compute = max(0.0, statistics.median(i["peak"]["denoise"] - i["peak"]["load"] for i in light)) if light else 0.0
    heavy = [(i, f) for i, f in features if f["weights"] > 2**30 and "rss" in i]  # only there do activations show
    activations = DESIGN_ACTIVATIONS
    if len({round(f["activations"]) for _i, f in heavy}) >= 2:
        design = np.array([[1.0, f["activations"]] for _i, f in heavy])
        slope = np.linalg.lstsq(design, np.array([i["rss"]["denoise"] for i, _f in heavy]), rcond=None)[0][1]
        activations = max(0.0, float(slope))
    rows, targets, peaks = [], [], []
    kinds = {item["model_id"]: prior.vae.kind if prior.vae else "" for item, prior in priors}
    for item, f in features:
        if item["peak"]["decode"] <= 1.02 * item["peak"]["denoise"]:
            continue  # the decode stayed under the denoise peak: it says nothing about the decoder
        base = fixed + f["weights"] + compute
        row = [f["output"], f["vae_attention"], f["vae_weights"]]
        row += [f["decoder"] if kinds[item["model_id"]] == k else 0.0 for k in KINDS]
        rows.append(row)
        targets.append(item["peak"]["decode"] - base)
        peaks.append(item["peak"]["decode"])  # the error that matters is the whole need's
    solved = _nnls(rows, targets, peaks) if rows else [4.0, 1.0, 0.0] + [0.0] * len(KINDS)
    measured = {k: v for k, v in zip(KINDS, solved[3:]) if any(kinds[i["model_id"]] == k for i in items)}
    floor = min((v for v in measured.values() if v > 0), default=1.0)
    measured = {k: v or floor for k, v in measured.items()}  # a decoder too narrow to show its term
    return PriorCoefficients(
        fixed=fixed,
        loading=loading,
        mapping=mapping,
        activations=activations,
        output=solved[0],
        vae_attention=solved[1],
        decode_weights=solved[2],
        decoder=measured,
        decoder_default=max(measured.values(), default=1.0),
        compute=compute,
        source=f"fitted to {len(items)} runs of {len({i['model_id'] for i in items})} models",
    )


def predicted(item: dict[str, Any], prior: ModelPrior, coefficients: PriorCoefficients) -> dict[str, float]:
    return prior.predict(
        item["num_frames"],
        item["width"],
        item["height"],
        coefficients,
        guidance_scale=item["guidance"],
        vae_tiling=item["vae_tiling"],
    )


def errors(
    items: list[dict[str, Any]],
    folders: dict[str, Path],
    coefficients: PriorCoefficients | None,
) -> list[tuple[dict[str, Any], str, float, float]]:
    """(item, phase, predicted, measured) per phase; ``coefficients=None``: leave-one-model-out refits."""
    out = []
    for item in items:
        used = coefficients or fit([i for i in items if i["model_id"] != item["model_id"]], folders)
        guess = predicted(item, prior_of(item, folders), used)
        for phase in PHASES:
            out.append((item, phase, guess[phase], float(item["peak"][phase])))
    return out


def _print_breakdown(by_phase: list, by_model: list) -> None:
    """Median and worst |error| per phase (of ``by_phase``), then per model (of ``by_model``)."""
    for phase in PHASES:
        m, w = _summary([r for r in by_phase if r[1] == phase])
        print(f"  {phase:8} median {m:.0%} worst {w:.0%}")
    for model_id in sorted({r[0]["model_id"] for r in by_model}):
        m, w = _summary([r for r in by_model if r[0]["model_id"] == model_id])
        print(f"  {model_id:34} median {m:.0%} worst {w:.0%}")


def _summary(rows: list[tuple[dict[str, Any], str, float, float]]) -> tuple[float, float]:
    relative = [abs(p - m) / m for _i, _ph, p, m in rows]
    return statistics.median(relative), max(relative)


def _request(item: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest(
        prompt="x",
        width=item["width"],
        height=item["height"],
        num_frames=item["num_frames"],
        model_id=item["model_id"],
        guidance_scale=item["guidance"],
    )


def _voxels(item: dict[str, Any]) -> int:
    return int(item["num_frames"] * item["width"] * item["height"])


def _caps(needs: list[float]) -> list[float]:
    """Worker caps that tell a model's measured settings apart: between each two needs more than 5 % apart (two
    runs of one setting differ by up to 14 % here), plus one under every need and one 20 % over all of them."""
    ordered = sorted(needs)
    between = [(a + b) / 2 for a, b in zip(ordered, ordered[1:]) if b > 1.05 * a]
    return [0.9 * ordered[0], *between, 1.2 * ordered[-1]]


def first_try(items: list[dict[str, Any]], folders: dict[str, Path]) -> dict[str, tuple[float, float, int]]:
    """Replayed from the measured needs, for each never-calibrated model under each of its ``_caps``: every
    measured request planned down its own grid (the largest measured setting no larger than it that the planner
    says fits; none: it says nothing fits). Right first time: the chosen setting's measured need is within the cap,
    or nothing fits and the planner said so. Per mode: (share right first time, mean pixel·frames kept against the
    largest setting that really fits, n)."""
    from components.memory.planner import MemoryPlanner

    results: dict[str, tuple[float, float, int]] = {}
    embedded = read_prior(folders[EMBEDDED_MODEL_ID], 2) if EMBEDDED_MODEL_ID in folders else None
    for mode in ("prior", "prior, leave-one-model-out", "tiny-Wan calibration"):
        right, kept = [], []
        for model_id in sorted({i["model_id"] for i in items} - {EMBEDDED_MODEL_ID}):
            own = [i for i in items if i["model_id"] == model_id and not i["vae_tiling"]]
            prior = prior_of(own[0], folders)
            held_out = fit([i for i in items if i["model_id"] != model_id], folders) if "leave" in mode else None
            for cap in _caps([i["peak"]["total"] for i in own]):
                planner = MemoryPlanner(None, hardware=cpu_kind(), dtype="bfloat16", prior_coefficients=held_out)
                if mode.startswith("prior"):
                    planner.know_prior(model_id, prior)
                    if embedded is not None:
                        planner.know_prior(EMBEDDED_MODEL_ID, embedded)
                else:
                    planner.know_weights(model_id, prior.total_weights)
                    if embedded is not None:
                        planner.know_weights(EMBEDDED_MODEL_ID, embedded.total_weights)
                for item in own:
                    below = sorted(
                        (i for i in own if all(i[k] <= item[k] for k in ("num_frames", "width", "height"))),
                        key=lambda i: -_voxels(i),
                    )
                    chosen = next((i for i in below if planner.fits(_request(i), RunOptions(), int(cap))), None)
                    best = next((i for i in below if i["peak"]["total"] <= cap), None)
                    if chosen is None:
                        right.append(best is None)
                        if best is not None:
                            kept.append(0.0)
                        continue
                    right.append(chosen["peak"]["total"] <= cap)
                    if best is not None and chosen["peak"]["total"] <= cap:
                        kept.append(_voxels(chosen) / _voxels(best))
        results[mode] = (sum(right) / len(right), statistics.mean(kept) if kept else 0.0, len(right))
    return results


def report(items: list[dict[str, Any]], folders: dict[str, Path]) -> None:
    shipped = prior_coefficients(cpu_kind())
    print(f"prior coefficients as shipped: {shipped}")
    print(f"\n{'model':34} {'frames×size':>12} {'phase':>8} {'predicted':>10} {'measured':>9} {'error':>7}   MiB")
    rows = errors(items, folders, shipped)
    for item, phase, guess, measured in rows:
        size = f"{item['num_frames']}×{item['width']}²" + (" t" if item["vae_tiling"] else "")
        print(
            f"{item['model_id']:34} {size:>12} {phase:>8} {guess / MiB:10.0f} {measured / MiB:9.0f} "
            f"{(guess - measured) / measured:+7.0%}"
        )
    never = [r for r in rows if r[0]["model_id"] != EMBEDDED_MODEL_ID]
    median, worst = _summary(never)
    print(
        f"\nnever-calibrated models, every phase: median |error| {median:.0%} (target ≤ 20 %), "
        f"worst {worst:.0%} (target ≤ 40 %), {len(never)} phase peaks"
    )
    _print_breakdown(never, rows)
    held = [r for r in errors(items, folders, None) if r[0]["model_id"] != EMBEDDED_MODEL_ID]
    m, w = _summary(held)
    print(f"leave-one-model-out (coefficients refitted without the model predicted): median {m:.0%} worst {w:.0%}")
    _print_breakdown(held, held)
    print("\nfirst try under worker caps between each model's measured needs, replayed from those needs:")
    for mode, (share, kept, n) in first_try(items, folders).items():
        print(
            f"  planned from the {mode:34}: {share:.0%} right first time (target ≥ 95 %), "
            f"pixel·frames kept {kept:.0%} of the largest that fits, {n} requests"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true", help="compare against cached measurements, measure none")
    parser.add_argument("--fit", action="store_true", help="print coefficients fitted to the cached measurements")
    parser.add_argument("--only", nargs="*", help="measure only these model ids")
    args = parser.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    measured = json.loads(CACHE.read_text()) if args.reuse else run_measurements(set(args.only or ()))
    folders = {model_id: folder for model_id, (folder, *_rest) in models().items()}
    measured = [m for m in measured if m["model_id"] in folders]
    for item in measured:  # measurements cached before these fields were written
        item.setdefault("guidance", 5.0 if item["model_id"].startswith("kintsugi/") else 1.0)
    if args.fit:
        print(fit(measured, folders))
        return
    report(measured, folders)


if __name__ == "__main__":
    # Here, not at import: a test imports this module, and the variables would stay set for every later test.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    main()
