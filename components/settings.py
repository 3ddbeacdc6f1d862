"""Kintsugi's settings: one frozen dataclass, every field settable by a ``KINTSUGI_*`` environment variable.

Defaults serve a newcomer: data in a git-ignored ``data/`` folder of the checkout, the embedded tiny model, no
memory cap. The README lists every variable; ``app.py`` exposes the same names as CLI flags.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.images import DEFAULT_MAX_IMAGE_BYTES
from components.generation.request import MODEL_ID_PATTERN
from recovery.errors import InvalidParameterError
from recovery.settings import parse_rate, parse_switch

__all__ = ["BACKENDS", "Settings", "parse_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "t": 10**12,
    "tb": 10**12,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
BACKENDS = ("local", "ray")
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def parse_bytes(text: str, *, name: str = "size") -> int:
    """``"2GiB"`` → 2147483648; ``"1.5GB"`` → 1500000000; a bare number is bytes."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise InvalidParameterError(
            f"`{name}` must be a size such as 2GiB or 1500MB (got {text!r})",
            parameter=name,
            value=text,
            constraint="size with unit",
        )
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class Settings:
    """Where Kintsugi keeps its files and how it runs generation and recovery."""

    data_dir: Path = DEFAULT_DATA_DIR
    hub_cache_dir: Path | None = None  # None: the hub's own (HF_HUB_CACHE, else HF_HOME/hub)
    model: str = EMBEDDED_MODEL_ID  # the model a request that names none runs on
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "bfloat16"  # bfloat16 | float32 | float16 (float16 only on CUDA)
    worker_memory_cap: int | None = None  # bytes; None = no cap
    load_timeout_s: float = 600.0
    max_recovery_attempts: int = 5
    recovery_timeout_s: float = 300.0
    user_intervention_threshold: int = 3
    memory_planning: bool = True  # plan requests down before running when they are predicted not to fit
    compile: bool = False  # torch.compile the transformer (faster steps after a one-off compile; needs a compiler)
    queue_size: int = 16  # requests waiting in the web app's queue at most; one more is answered "busy"
    chaos: bool = False  # fault injection from the Scenarios tab (KINTSUGI_CHAOS=on); off by default
    chaos_rate: float = 1.0  # the share of failure types drawn by "inject at rate", 0..1
    journal_retention_days: int = 30  # finished journal entries older than this are deleted at start; 0 = never
    max_upload_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # the most bytes an image-to-video start image may have
    health_interval_s: float = 30.0  # the health watch's quick check of installed models (file changes: ≤ 2 s); 0 = off
    backend: str = "local"  # local: one supervised worker process | ray: replicas as Ray actors (the ray extra)
    ray_address: str | None = None  # None: a local Ray instance on 127.0.0.1 | auto | ray://host:port
    ray_replicas: int = 0  # Ray replicas, one GPU each; 0: one per GPU of the cluster (one on a machine without)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def embedded_model_dir(self) -> Path:
        return self.models_dir / "tiny-wan-random"

    def tiny_model_dir(self, model_id: str) -> Path:
        """Where a built-in tiny model (``kintsugi/<name>``) is built: ``models/<name>``."""
        return self.models_dir / model_id.rsplit("/", 1)[-1]

    @property
    def uploads_dir(self) -> Path:
        """Prepared conditioning images, named by their sha256 (kept: a journaled request's re-run needs its own)."""
        return self.data_dir / "uploads"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def store_state_dir(self) -> Path:
        return self.data_dir / "kintsugi-store"

    @property
    def journal_db(self) -> Path:
        return self.data_dir / "journal.sqlite"

    @property
    def metrics_db(self) -> Path:
        return self.data_dir / "metrics.sqlite"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``KINTSUGI_<FIELD>`` variables (e.g. ``KINTSUGI_WORKER_MEMORY_CAP=2GiB``), then apply overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"KINTSUGI_{f.name.upper()}")
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _convert(f.name, raw)
        settings = cls(**values)
        return replace(settings, **overrides) if overrides else settings


def _convert(name: str, raw: str) -> object:
    variable = f"KINTSUGI_{name.upper()}"
    if name in {"data_dir", "hub_cache_dir"}:
        return Path(raw).expanduser()
    if name == "max_upload_bytes":
        size = parse_bytes(raw, name=variable)
        if size <= 0:
            raise InvalidParameterError(
                f"`{variable}` must be a size above 0 (got {raw!r})", parameter=variable, value=raw, constraint="> 0"
            )
        return size
    if name == "worker_memory_cap":
        return None if raw.lower() in {"none", "off", "0"} else parse_bytes(raw, name=variable)
    if name in {"load_timeout_s", "recovery_timeout_s", "health_interval_s"}:
        return _number(variable, raw, float)
    if name == "backend" and raw.strip().lower() not in BACKENDS:
        raise InvalidParameterError(
            f"`{variable}` must be one of {', '.join(BACKENDS)} (got {raw!r})",
            parameter=variable,
            value=raw,
            constraint="|".join(BACKENDS),
        )
    if name == "backend":
        return raw.strip().lower()
    if name == "ray_address":
        return raw.strip()
    if name in {
        "max_recovery_attempts",
        "user_intervention_threshold",
        "queue_size",
        "journal_retention_days",
        "ray_replicas",
    }:
        return _number(variable, raw, int)
    if name in {"memory_planning", "compile", "chaos"}:
        return _parsed(variable, raw, parse_switch, "on|off")
    if name == "chaos_rate":
        return _parsed(variable, raw, parse_rate, "0 <= rate <= 1")
    if name == "model" and not MODEL_ID_PATTERN.fullmatch(raw.strip()):
        raise InvalidParameterError(
            f"`{variable}` must look like owner/name (got {raw!r})",
            parameter=variable,
            value=raw,
            constraint="owner/name",
        )
    return raw.strip() if name == "model" else raw


def _parsed(variable: str, raw: str, parse: Callable[[str, str], object], constraint: str) -> object:
    """One of ``recovery.settings``'s parsers, its refusal as the error that names the variable."""
    try:
        return parse(variable, raw)
    except ValueError as exc:
        raise InvalidParameterError(str(exc), parameter=variable, value=raw, constraint=constraint) from exc


def _number(variable: str, raw: str, kind: type) -> object:
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < 0:
        raise InvalidParameterError(
            f"`{variable}` must be a non-negative number (got {raw!r})",
            parameter=variable,
            value=raw,
            constraint=">= 0",
        )
    return value
