"""Precision per component, by what the hardware does fast.

A dtype that is correct everywhere is not fast everywhere: on a CPU without AVX-512-BF16/AMX one bf16 3D
convolution of the real Wan VAE took over 60 s against 0.37 s in fp32, and a bf16 decode of 9×128² did not finish
in 300 s while the fp32 decode took 28 s (measured, see DESIGN.md). The VAE is all 3D convolutions, so on such a
machine it runs in fp32 (twice the weight bytes of a small module) while the transformer keeps the asked dtype.

``probe_speeds`` times one tiny 3D convolution per dtype (milliseconds); ``PrecisionProbe`` caches the figures per
machine key in a JSON file so the probe runs once per machine; ``choose_precision`` turns them into a dtype per
component with the reason, which the result reports.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from components.system.files import write_text_atomic

__all__ = ["PrecisionChoice", "PrecisionProbe", "choose_precision", "machine_key", "probe_speeds"]

#: A dtype whose convolution is this many times slower than fp32 is not used for convolution-heavy components.
SLOW_RATIO = 4.0
#: Components made of 3D convolutions (decode cost) — the ones a slow convolution dtype hurts.
CONVOLUTION_COMPONENTS = ("vae",)


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype each component runs in (components not named run in ``dtype``) and why."""

    dtype: str
    components: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    def of(self, component: str) -> str:
        return self.components.get(component, self.dtype)


def machine_key(device: str) -> str:
    """What decides kernel speed: the CPU model and its bf16 flags (or the GPU's name), and the torch build."""
    import torch

    if device == "cuda":
        return f"cuda:{torch.cuda.get_device_name(0)}:torch {torch.__version__}"
    model, flags = platform.processor() or "cpu", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    fast = sorted(flags & {"amx_bf16", "avx512_bf16", "avx512_fp16", "amx_fp16"})
    return f"cpu:{model}:{'+'.join(fast) or 'no-bf16-kernels'}:torch {torch.__version__}"


def probe_speeds(device: str, dtypes: tuple[str, ...] = ("float32", "bfloat16"), repeats: int = 3) -> dict[str, float]:
    """Seconds of one small 3D convolution per dtype (the best of ``repeats``, after a warm-up call). Tiny on
    purpose: a slow kernel is still milliseconds here, so the probe never costs what it protects against."""
    import torch

    speeds: dict[str, float] = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        if device == "cpu" and dtype is torch.float16:
            continue
        generator = torch.Generator().manual_seed(0)
        conv = torch.nn.Conv3d(8, 8, 3, padding=1).to(device=device, dtype=dtype)
        sample = torch.randn(1, 8, 3, 24, 24, generator=generator).to(device=device, dtype=dtype)
        best = float("inf")
        with torch.no_grad():
            conv(sample)
            for _ in range(repeats):
                started = time.perf_counter()
                conv(sample)
                if device == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - started)
        speeds[name] = best
    return speeds


def choose_precision(dtype: str, speeds: Mapping[str, float], *, slow_ratio: float = SLOW_RATIO) -> PrecisionChoice:
    """``dtype`` for every component, except convolution components when ``dtype``'s convolution is more than
    ``slow_ratio`` times slower than fp32 here: those run in fp32."""
    mine, reference = speeds.get(dtype), speeds.get("float32")
    if dtype == "float32" or not mine or not reference or mine <= slow_ratio * reference:
        return PrecisionChoice(dtype)
    ratio = mine / reference
    return PrecisionChoice(
        dtype,
        {component: "float32" for component in CONVOLUTION_COMPONENTS},
        f"the VAE ran in float32: {dtype} 3D convolutions are {ratio:.0f}× slower than float32 on this machine",
    )


class PrecisionProbe:
    """``probe_speeds`` once per machine key, remembered in ``path`` (a JSON object: key → speeds)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None

    def _cached(self) -> dict[str, dict[str, float]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def speeds(self, device: str) -> dict[str, float]:
        key = machine_key(device)
        cached = self._cached()
        known = cached.get(key)
        if isinstance(known, dict) and known:
            return {str(k): float(v) for k, v in known.items()}
        measured = probe_speeds(device)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(self.path, json.dumps({**cached, key: measured}, indent=2, sort_keys=True) + "\n")
            except OSError:  # a read-only data folder: probe again next start, never fail a generation for it
                pass
        return measured

    def choose(self, device: str, dtype: str) -> PrecisionChoice:
        return choose_precision(dtype, self.speeds(device))
