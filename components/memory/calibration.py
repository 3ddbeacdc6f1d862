"""Measuring what a request really needs under the worker's memory cap, and the numbers shipped for a fresh
install.

What a cap refuses is not what ``top`` shows. On the CPU the worker's cap is ``RLIMIT_AS``: an allocation fails
once the process's *address space* (``VmSize``) would pass the size it had after its imports plus the cap. Peak
RSS (``VmHWM``, what ``GenerationOutput.peak_memory_bytes`` reports on the CPU) predicts that badly — address
space holds reserved-but-untouched allocator arenas and thread stacks, and here it ranged from 1.9× to 0.9× the
RSS growth. So a CPU measurement is the growth of the worker's peak address space (``VmPeak`` of a fresh worker
minus its ``VmSize`` when ready): exactly the smallest cap that would have let the run through, in one run
instead of a bisection over caps. ``VmPeak`` cannot be reset, hence one fresh worker per measurement (~5 s each).
On CUDA the measurement is the run's ``torch.cuda.max_memory_allocated`` (what ``set_per_process_memory_fraction``
limits), which resets per run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from components.memory.prior import PriorCoefficients
from recovery.errors import OutOfMemoryError
from recovery.procfs import process_status

__all__ = [
    "DEFAULT_CALIBRATIONS",
    "PRIOR_COEFFICIENTS",
    "Measurement",
    "calibrate",
    "measure_once",
    "prior_coefficients",
]

Size = tuple[int, int, int]  # (num_frames, width, height)


@dataclass(frozen=True)
class Measurement:
    """One measured run: the setting and the memory cap it needs (bytes), or the cap it failed under."""

    model_id: str
    num_frames: int
    width: int
    height: int
    vae_tiling: bool
    model_cpu_offload: bool
    need_bytes: int | None  # smallest cap that lets it run; None when the run failed
    failed_at_cap: int | None = None
    seconds: float | None = None


def measure_once(
    worker: Any,
    model_path: str | os.PathLike[str],
    size: Size,
    options: RunOptions = RunOptions(),
    *,
    model_id: str = EMBEDDED_MODEL_ID,
    steps: int = 2,
    output_dir: str | os.PathLike[str] | None = None,
) -> Measurement:
    """Run ``size`` once in a fresh ``worker`` process and return what it needed (see the module docstring)."""
    frames, width, height = size
    worker.restart()
    base = int(worker.stats()["vm_size"])  # ready, model not loaded yet: the address space the cap counts from
    request = GenerationRequest(
        prompt="calibration", width=width, height=height, num_frames=frames, steps=steps, model_id=model_id
    )
    target = Path(output_dir or Path(model_path).parent) / f".calibration-{frames}x{width}x{height}.mp4"
    setting = (model_id, frames, width, height, options.vae_tiling, options.model_cpu_offload)
    output: GenerationOutput | None = None
    try:
        for event in worker.run(request, target, model_path=model_path, options=options):
            output = event.output or output
    except OutOfMemoryError as exc:
        return Measurement(*setting, need_bytes=None, failed_at_cap=exc.memory_cap)
    finally:
        target.unlink(missing_ok=True)
    seconds = sum(output.timings.values()) if output is not None else None
    if output is not None and output.device == "cuda":
        need = output.peak_memory_bytes
    else:
        need = process_status("VmPeak", pid=worker.pid)["VmPeak"] - base
    return Measurement(*setting, need_bytes=need, seconds=seconds or None)


def calibrate(
    worker: Any,
    model_path: str | os.PathLike[str],
    sizes: Iterable[Size],
    *,
    options: Sequence[RunOptions] = (RunOptions(), RunOptions(vae_tiling=True)),
    model_id: str = EMBEDDED_MODEL_ID,
    planner: Any = None,
    steps: int = 2,
) -> list[Measurement]:
    """Measure each ``(num_frames, width, height)`` under each of ``options``; feed the planner if given.

    Give an uncapped worker (a capped one reports sizes over its cap as failures, which teaches less).
    """
    measurements = [
        measure_once(worker, model_path, size, option, model_id=model_id, steps=steps)
        for size in sizes
        for option in options
    ]
    if planner is not None:
        for item in measurements:
            planner.add_measurement(item)
    return measurements


# Measured with `calibrate` on the embedded model (2-core CPUs, torch 2.13 CPU, bf16, 2 steps): the smallest worker
# memory cap, in MiB, that each setting needs. Columns: frames, width, height, vae_tiling, MiB. One table per kind of
# CPU (``components.memory.hardware.cpu_kind``): on a CPU with AMX the bf16 convolutions take other kernels, and VAE
# tiling raises the tiny model's peak instead of lowering it. Refreshed by `python bench/bench_oom.py --calibrate`.
_CPU: dict[str, Any] = {
    "model_id": EMBEDDED_MODEL_ID,
    "hardware": "cpu",
    "dtype": "bfloat16",
    "points_mib": [
        (9, 128, 128, False, 205),
        (9, 256, 256, False, 251),
        (17, 256, 256, False, 265),
        (33, 256, 256, False, 284),
        (9, 384, 384, False, 356),
        (17, 384, 384, False, 352),
        (33, 384, 384, False, 445),
        (5, 512, 512, False, 425),
        (9, 512, 512, False, 451),
        (17, 512, 512, False, 521),
        (33, 512, 512, False, 631),
        (9, 640, 640, False, 636),
        (9, 512, 288, False, 349),
        (9, 128, 128, True, 198),
        (9, 256, 256, True, 253),
        (17, 256, 256, True, 269),
        (33, 256, 256, True, 297),
        (9, 384, 384, True, 336),
        (17, 384, 384, True, 383),
        (33, 384, 384, True, 468),
        (5, 512, 512, True, 301),
        (9, 512, 512, True, 363),
        (17, 512, 512, True, 486),
        (33, 512, 512, True, 590),
        (9, 640, 640, True, 495),
        (9, 512, 288, True, 308),
    ],
}

# Measured 2026-12-01 on an Intel Xeon with AMX and AVX-512-BF16, each point the larger of two runs (runs of one
# setting differed by up to 10 % here).
_CPU_AMX: dict[str, Any] = {
    "model_id": EMBEDDED_MODEL_ID,
    "hardware": "cpu:amx",
    "dtype": "bfloat16",
    "points_mib": [
        (9, 256, 256, False, 240),
        (13, 256, 256, False, 249),
        (17, 256, 256, False, 260),
        (25, 256, 256, False, 283),
        (33, 256, 256, False, 314),
        (9, 384, 384, False, 306),
        (13, 384, 384, False, 301),
        (17, 384, 384, False, 349),
        (25, 384, 384, False, 470),
        (33, 384, 384, False, 492),
        (9, 512, 512, False, 380),
        (13, 512, 512, False, 425),
        (17, 512, 512, False, 512),
        (25, 512, 512, False, 542),
        (33, 512, 512, False, 656),
        (9, 128, 128, False, 212),
        (33, 128, 128, False, 232),
        (5, 512, 512, False, 297),
        (9, 640, 640, False, 533),
        (9, 512, 288, False, 285),
        (9, 256, 256, True, 239),
        (13, 256, 256, True, 256),
        (17, 256, 256, True, 273),
        (25, 256, 256, True, 298),
        (33, 256, 256, True, 319),
        (9, 384, 384, True, 408),
        (13, 384, 384, True, 414),
        (17, 384, 384, True, 455),
        (25, 384, 384, True, 527),
        (33, 384, 384, True, 597),
        (9, 512, 512, True, 419),
        (13, 512, 512, True, 457),
        (17, 512, 512, True, 494),
        (25, 512, 512, True, 558),
        (33, 512, 512, True, 615),
        (9, 128, 128, True, 212),
        (33, 128, 128, True, 231),
        (5, 512, 512, True, 366),
        (9, 640, 640, True, 495),
        (9, 512, 288, True, 389),
    ],
}

DEFAULT_CALIBRATIONS: tuple[dict[str, Any], ...] = (_CPU, _CPU_AMX)


# The physical prior's coefficients (``components.memory.prior``), fitted once by ``python bench/bench_prior.py --fit``
# to peaks measured per phase in fresh workers (2026-12-01, Intel Xeon with AMX, 2 cores, torch 2.13 CPU, bf16,
# diffusers 0.42.1): the six tiny text-to-video families at 9×128², 9×256², 17×256², 9×384², 9×512² (2 steps,
# guidance 5), the real Wan 2.1 1.3B transformer config (random weights, bf16 in the file, over the tiny VAE) at
# 9×128², 9×256², 33×256² and the real Wan 2.1 VAE config (``AutoencoderKLWan()``, fp32 in the file, under the tiny
# transformer) at 9×128², 9×256², 9×384², 9×384² tiled (1 step, no guidance). What fixed each: ``fixed`` the tiny
# models' load peaks (their weights are < 1 MB); ``loading``/``mapping`` the two real folders' load peaks (two
# models, two unknowns: exact, not checked by a third); ``activations`` the 1.3B transformer's resident growth per
# token (RSS: its load's address-space peak, 2.6× its weights, hides the denoise from ``VmPeak`` here; 0.10 MiB a
# token, DESIGN.md had 0.07); ``decoder`` per VAE class, ``output``, ``vae_attention`` and ``decode_weights`` the
# decode peaks above the denoise peak (rows weighted by the whole peak). LTX's tiny decoder is too narrow to show a
# decoder term (fitted 0): it is floored at the smallest other class's. ``decode_weights`` rests on the real VAE
# alone. The CPU unit (address-space growth) holds for every kind of CPU; CUDA's (``max_memory_allocated``) has no
# process part and no mapped files, and its activation/decoder/output terms are the CPU's, not measured on a GPU.
_DECODER = {
    "AutoencoderKLWan": 4.45,
    "AutoencoderKLCogVideoX": 12.15,
    "AutoencoderKLHunyuanVideo": 1.79,
    "AutoencoderKLLTXVideo": 1.79,
}
_CPU_PRIOR = PriorCoefficients(
    fixed=187.6 * 2**20,
    loading=0.95,
    mapping=1.62,
    activations=4.29,
    output=5.07,
    decoder=_DECODER,
    decoder_default=12.15,
    decode_weights=2.64,
    vae_attention=1.03,
    source="bench/bench_prior.py --fit, 2026-12-01, 37 runs of 8 models on a 2-core AMX Xeon",
)
PRIOR_COEFFICIENTS: dict[str, PriorCoefficients] = {
    "cpu": _CPU_PRIOR,
    # No process part and no mapped files on the device: the weights count at their size.
    "cuda": replace(
        _CPU_PRIOR,
        fixed=0.0,
        loading=1.0,
        mapping=0.0,
        source="the CPU's activation and decode terms; weights at their size; not measured on a GPU",
    ),
}


def prior_coefficients(hardware: str) -> PriorCoefficients:
    """The prior's coefficients for a ``hardware_key``: the CPU's for every kind of CPU, CUDA's on a GPU."""
    kind = "cuda" if hardware.startswith("cuda") else "cpu"
    return PRIOR_COEFFICIENTS.get(kind, PRIOR_COEFFICIENTS["cpu"])
