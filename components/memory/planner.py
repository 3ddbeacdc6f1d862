"""The memory planner: how much memory a request needs here, calibrated from measured runs, and a plan that
fits the budget before anything runs.

The unit is *the worker memory cap a request needs* (see ``components.memory_calibration`` for how it is
measured on the CPU and on CUDA). A prediction is a least-squares fit over measured points, per model, hardware,
dtype and memory switches, with three terms that match where memory goes in Wan: a fixed part (weights, threads,
allocator arenas), a per-pixel part (one frame's VAE decode buffers) and a per-pixel-per-frame part (the output
video). Steps do not change peak memory. A model with no measurements here starts from its physical prior
(``components.memory.prior``: its weights, transformer and VAE read from its folder), corrected by each measured
point of it as they come, until it has enough of its own for a fit; only a model whose configs cannot be read
borrows the embedded model's fit, shifted by the difference in weights. Then what real runs taught wins:

* a failure under cap ``C`` means that setting — and every larger one (more frames, wider, taller) — needs more
  than ``C``; if the fit had said it fits, the fit's scale grows so that similar settings move too;
* a success under cap ``C`` means that setting and every smaller one fit in ``C``.

Measurements live in one JSON file in the data dir (written atomically); ``DEFAULT_CALIBRATIONS`` — measured here
on the embedded model — is the starting point of a fresh install.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from components.generation.request import GenerationRequest, RunOptions
from components.memory.calibration import DEFAULT_CALIBRATIONS, Measurement
from components.memory.calibration import prior_coefficients as coefficients_for
from components.memory.hardware import cpu_kind
from components.memory.prior import ModelPrior, PriorCoefficients
from components.system.files import write_text_atomic

__all__ = ["MemoryPlanner"]

_MAX_OUTCOMES = 500
_STORE_VERSION = 1
_KERNEL_WIDTH = 0.35  # in log units: a point counts fully for its own size, little for twice the pixels
_SHRINK = 0.05  # far from every measured point, the correction fades to the plain fit
_FAILURE_WEIGHT = 10.0  # a recent real failure outweighs an older calibration point at the same size
_FAILURE_STEP = 0.1  # a failure says "needs more than the cap", not how much: assume 10 % more
_OWN_FIT_POINTS = 4  # a model with a prior keeps it (corrected) until it has this many points of its own


def _unkeyed_switches(options: RunOptions) -> bool:
    """Whether ``options`` turn on a memory switch the planner has no key for (group offload, layerwise casting,
    sequential offload): the ladder predicts those from the weight bytes they move (``components.memory.rungs``)."""
    return options.group_offload or options.layerwise_casting or options.sequential_offload


def _options_key(options: RunOptions) -> str:
    return f"tiling={int(options.vae_tiling)},offload={int(options.model_cpu_offload)}"


def _features(frames: int, width: int, height: int) -> tuple[float, float, float]:
    pixels = width * height / 1e6
    return 1.0, pixels, pixels * frames


def _dominates(big: Mapping[str, Any], small: Mapping[str, Any]) -> bool:
    return all(big[name] >= small[name] for name in ("num_frames", "width", "height"))


def _fit(points: list[tuple[tuple[float, float, float], float]]) -> tuple[float, float, float] | None:
    """Non-negative least squares over three terms (drop a term that comes out negative and fit again)."""
    import numpy as np

    if len(points) < 2:
        return None
    active = [0, 1, 2]
    while active:
        design = np.array([[f[i] for i in active] for f, _ in points])
        target = np.array([need for _, need in points])
        if np.linalg.matrix_rank(design) < len(active):
            active.pop()
            continue
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        if (solution >= 0).all():
            coefficients = [0.0, 0.0, 0.0]
            for index, value in zip(active, solution):
                coefficients[index] = float(value)
            return coefficients[0], coefficients[1], coefficients[2]
        active.pop(int(np.argmin(solution)))
    return None


@dataclass(frozen=True)
class _Fit:
    """Three-term least squares plus a local correction: near a measured point the prediction follows the
    measurement (VAE tiling is not linear in the pixels: it starts to act above its tile size)."""

    coefficients: tuple[float, float, float]
    residuals: tuple[tuple[float, float, float, float, float], ...]  # log pixels, frames, aspect; weight; residual

    @classmethod
    def of(cls, points: list[dict[str, Any]]) -> _Fit | None:
        coefficients = _fit([(_features(p["num_frames"], p["width"], p["height"]), p["need_bytes"]) for p in points])
        if coefficients is None:
            return None
        plain = cls(coefficients, ())
        residuals = tuple(
            (
                math.log(p["width"] * p["height"]),
                math.log(p["num_frames"]),
                math.log(p["width"] / p["height"]),
                _FAILURE_WEIGHT if p.get("source") == "failure" else 1.0,
                p["need_bytes"] - plain.predict(p["num_frames"], p["width"], p["height"]),
            )
            for p in points
        )
        return cls(coefficients, residuals)

    def predict(self, frames: int, width: int, height: int) -> float:
        fixed, per_pixel, per_voxel = self.coefficients
        _one, pixels, voxels = _features(frames, width, height)
        value = fixed + per_pixel * pixels + per_voxel * voxels
        if not self.residuals:
            return value
        here = (math.log(width * height), math.log(frames), math.log(width / height))
        weights = [
            weight * math.exp(-sum((x - y) ** 2 for x, y in zip(point, here)) / _KERNEL_WIDTH**2)
            for *point, weight, _r in self.residuals
        ]
        correction = sum(w * r[-1] for w, r in zip(weights, self.residuals)) / (sum(weights) + _SHRINK)
        return value + correction


@dataclass(frozen=True)
class _PriorFit:
    """A model's physical prior times what its own measured points say about it: a global ratio (the geometric
    mean of measured / predicted, shrunk towards 1 while points are few) and, near each point, its own ratio —
    so a measured size is predicted as measured and far sizes move by the model's overall bias."""

    prior: ModelPrior
    coefficients: PriorCoefficients
    tiling: bool
    offload: bool
    points: tuple[tuple[float, float, float, float, float], ...]  # log pixels, frames, aspect; weight; log ratio
    bias: float = 0.0

    @classmethod
    def of(
        cls, prior: ModelPrior, coefficients: PriorCoefficients, options: RunOptions, points: list[dict[str, Any]]
    ) -> _PriorFit:
        plain = cls(prior, coefficients, options.vae_tiling, options.model_cpu_offload, ())
        ratios = []
        for p in points:
            predicted = plain.predict(p["num_frames"], p["width"], p["height"])
            if predicted > 0 and p["need_bytes"] > 0:
                weight = _FAILURE_WEIGHT if p.get("source") == "failure" else 1.0
                ratios.append((p, weight, math.log(p["need_bytes"] / predicted)))
        if not ratios:
            return plain
        bias = sum(r for *_x, r in ratios) / (len(ratios) + 1)  # one point moves far sizes half-way
        residuals = tuple(
            (
                math.log(p["width"] * p["height"]),
                math.log(p["num_frames"]),
                math.log(p["width"] / p["height"]),
                weight,
                ratio - bias,
            )
            for p, weight, ratio in ratios
        )
        return cls(prior, coefficients, options.vae_tiling, options.model_cpu_offload, residuals, bias)

    def phases(self, frames: int, width: int, height: int, guidance_scale: float = 5.0) -> dict[str, float]:
        return self.prior.predict(
            frames,
            width,
            height,
            self.coefficients,
            guidance_scale=guidance_scale,
            vae_tiling=self.tiling,
            model_cpu_offload=self.offload,
        )

    def predict(self, frames: int, width: int, height: int, guidance_scale: float = 5.0) -> float:
        value = self.phases(frames, width, height, guidance_scale)["total"]
        if not self.points:
            return value
        here = (math.log(width * height), math.log(frames), math.log(width / height))
        weights = [
            weight * math.exp(-sum((x - y) ** 2 for x, y in zip(point, here)) / _KERNEL_WIDTH**2)
            for *point, weight, _r in self.points
        ]
        local = sum(w * r[-1] for w, r in zip(weights, self.points)) / (sum(weights) + _SHRINK)
        return value * math.exp(self.bias + local)


@dataclass
class _Profile:
    points: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    scale: dict[str, float] = field(default_factory=dict)


class MemoryPlanner:
    """Predicts a request's memory need and plans settings that fit; learns from every recorded run.

    ``path``: the JSON calibration store (``None``: in memory only). ``hardware``: ``hardware_key`` of the probe
    (``"cpu"`` here). ``margin``: the share added to a fitted prediction before comparing with a budget.
    ``prior_coefficients``: the physical prior's coefficients (default: ``calibration.prior_coefficients`` of the
    hardware).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        hardware: str | None = None,
        dtype: str = "bfloat16",
        margin: float = 0.08,
        defaults: Sequence[Mapping[str, Any]] | None = DEFAULT_CALIBRATIONS,
        prior_coefficients: PriorCoefficients | None = None,
    ) -> None:
        if not 0 <= margin < 1:
            raise ValueError(f"`margin` must be in [0, 1) (got {margin})")
        self.path = Path(path) if path is not None else None
        self.hardware, self.dtype, self.margin = hardware or cpu_kind(), dtype, margin
        self._lock = threading.Lock()
        self._profiles: dict[str, _Profile] = {}
        self._weights: dict[str, int] = {}  # model → weight bytes as loaded (``know_weights``), this process only
        self._priors: dict[str, ModelPrior] = {}  # model → its physical prior (``know_prior``), this process only
        self._coefficients = prior_coefficients or coefficients_for(self.hardware)
        table = next((t for t in defaults or () if (t["hardware"], t["dtype"]) == (self.hardware, dtype)), None)
        self._default_table: Mapping[str, Any] | None = table
        if table is not None:
            profile = self._profile(table["model_id"])
            for frames, width, height, tiling, mib in table["points_mib"]:
                profile.points.append(
                    dict(
                        num_frames=frames,
                        width=width,
                        height=height,
                        vae_tiling=tiling,
                        model_cpu_offload=False,
                        need_bytes=mib * 2**20,
                        source="default",
                    )
                )
        if self.path is not None and self.path.exists():
            self._load()

    # -- the store ------------------------------------------------------------------------------------------------
    def _key(self, model_id: str) -> str:
        return f"{model_id}|{self.hardware}|{self.dtype}"

    def _profile(self, model_id: str) -> _Profile:
        return self._profiles.setdefault(self._key(model_id), _Profile())

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())  # type: ignore[union-attr]
        except (OSError, ValueError):
            return  # an unreadable store is a fresh start, not a failure
        for key, saved in data.get("profiles", {}).items():
            profile = self._profiles.setdefault(key, _Profile())
            measured = [p for p in saved.get("points", []) if p.get("source") != "default"]
            if any(p.get("source") == "calibrate" for p in measured):  # a real calibration replaces the defaults
                profile.points = [p for p in profile.points if p.get("source") != "default"]
            profile.points.extend(measured)
            profile.outcomes = list(saved.get("outcomes", []))[-_MAX_OUTCOMES:]
            profile.scale = dict(saved.get("scale", {}))

    def _save(self) -> None:
        if self.path is None:
            return
        payload = {
            "version": _STORE_VERSION,
            "profiles": {
                key: {
                    "points": [p for p in prof.points if p.get("source") != "default"],
                    "outcomes": prof.outcomes,
                    "scale": prof.scale,
                }
                for key, prof in self._profiles.items()
            },
        }
        write_text_atomic(self.path, json.dumps(payload, indent=1, sort_keys=True))

    # -- learning -------------------------------------------------------------------------------------------------
    def add_measurement(self, item: Measurement) -> None:
        """A calibration run: an exact need (or, if it failed under a cap, a lower bound)."""
        request = GenerationRequest(
            prompt="calibration",
            width=item.width,
            height=item.height,
            num_frames=item.num_frames,
            model_id=item.model_id,
        )
        options = RunOptions(vae_tiling=item.vae_tiling, model_cpu_offload=item.model_cpu_offload)
        if item.need_bytes is not None:
            with self._lock:
                profile = self._profile(item.model_id)
                profile.points = [p for p in profile.points if p.get("source") != "default"]
                profile.points.append(
                    dict(self._setting(request, options), need_bytes=int(item.need_bytes), source="calibrate")
                )
                self._save()
        elif item.failed_at_cap is not None:
            self.record(request, options, None, False, memory_cap=item.failed_at_cap)

    def record(
        self,
        request: GenerationRequest,
        options: RunOptions,
        peak_bytes: int | None,
        ok: bool,
        *,
        memory_cap: int | None = None,
        exact: bool | None = None,
    ) -> None:
        """Learn from a finished run. ``memory_cap`` turns the outcome into a bound (fits in / needs more than
        the cap); ``peak_bytes`` is used as an exact need when it is in the planner's unit — on CUDA by default
        (``max_memory_allocated``), on the CPU only with ``exact=True`` (address-space growth, not peak RSS)."""
        exact = not self.hardware.startswith("cpu") if exact is None else exact
        if _unkeyed_switches(options):
            return  # the fit is keyed by tiling and model offload only: such a run would teach it a wrong need
        setting = self._setting(request, options)
        with self._lock:
            profile = self._profile(request.model_id)
            if ok and peak_bytes and exact:
                profile.points.append(dict(setting, need_bytes=int(peak_bytes), source="run"))
            if memory_cap is not None:
                if not ok:
                    fitted = self._fitted(request, options)
                    if fitted is not None and fitted * (1 + self.margin) <= memory_cap:
                        # The fit was wrong here. With the model's own points, the failure becomes a point (its
                        # neighbourhood moves, far settings do not); on the prior, only a scale can move.
                        own = [p for p in profile.points if self._same_options(p, setting)]
                        if len(own) >= 2:
                            profile.points.append(
                                dict(setting, need_bytes=int(memory_cap * (1 + _FAILURE_STEP)), source="failure")
                            )
                        else:
                            key = _options_key(options)
                            profile.scale[key] = max(
                                profile.scale.get(key, 1.0), memory_cap * (1 + self.margin + _FAILURE_STEP) / fitted
                            )
                profile.outcomes.append(dict(setting, cap_bytes=int(memory_cap), ok=bool(ok)))
                del profile.outcomes[:-_MAX_OUTCOMES]
            self._save()

    def know_weights(self, model_id: str, total_bytes: int) -> None:
        """What ``model_id``'s weights take once loaded (``components.memory.prior.weight_bytes``, read from the
        safetensors headers). A model predicted from another model's fit (never run here) gets the difference in
        weights added to that fit: the first physical correction, before its own runs take over."""
        with self._lock:
            self._weights[model_id] = int(total_bytes)

    def know_prior(self, model_id: str, prior: ModelPrior) -> None:
        """``model_id``'s physical prior (``components.memory.prior.read_prior``, from its folder alone): what the
        planner predicts for it until it has measurements of its own. Its weights count as ``know_weights``'s."""
        with self._lock:
            self._priors[model_id] = prior
            self._weights[model_id] = prior.total_weights

    def prior_phases(self, request: GenerationRequest, options: RunOptions = RunOptions()) -> dict[str, int] | None:
        """The prior's peak per phase (``load``, ``denoise``, ``decode``, ``total``; bytes) for a model whose prior
        is known, before any correction by measurements; ``None`` without a prior."""
        with self._lock:
            prior = self._priors.get(request.model_id)
        if prior is None:
            return None
        phases = prior.predict(
            request.num_frames,
            request.width,
            request.height,
            self._coefficients,
            guidance_scale=request.guidance_scale,
            vae_tiling=options.vae_tiling,
            model_cpu_offload=options.model_cpu_offload,
        )
        return {name: int(value) for name, value in phases.items()}

    # -- prediction -----------------------------------------------------------------------------------------------
    @staticmethod
    def _setting(request: GenerationRequest, options: RunOptions) -> dict[str, Any]:
        return dict(
            num_frames=request.num_frames,
            width=request.width,
            height=request.height,
            vae_tiling=options.vae_tiling,
            model_cpu_offload=options.model_cpu_offload,
            streamed_decode=options.streamed_decode,
        )

    def _model(self, model_id: str, options: RunOptions) -> tuple[_Fit | _PriorFit, float, float] | None:
        """The fit for this model and options; else its prior corrected by its points (a model never measured
        here, or measured too little); else the same model's untiled fit; else the embedded model's (its shape is
        the prior for a model whose configs are unreadable) — with the scale learned from failures, and the bytes
        to add: for a fit borrowed from another model, the difference in weights where both are known."""
        profile = self._profiles.get(self._key(model_id), _Profile())
        scale = profile.scale.get(_options_key(options), 1.0)
        prior_model = self._priors.get(model_id)
        own = [p for p in profile.points if self._same_options(p, self._option_fields(options))]
        if options.streamed_decode and not own:
            # A streamed decode never measured borrows the plain decode's fit with the same switches (it needs less)
            return self._model(model_id, replace(options, streamed_decode=False))
        if prior_model is None or len(own) >= _OWN_FIT_POINTS:
            fitted = _Fit.of(own)
            if fitted is not None:
                return fitted, scale, 0.0
        if prior_model is not None:
            return _PriorFit.of(prior_model, self._coefficients, options, own), scale, 0.0
        prior_id = self._default_table["model_id"] if self._default_table else None
        prior = self._profiles.get(self._key(prior_id), _Profile()) if prior_id else _Profile()
        for source, wanted in ((profile, RunOptions()), (prior, options), (prior, RunOptions())):
            same = [p for p in source.points if self._same_options(p, self._option_fields(wanted))]
            fitted = _Fit.of(same)
            if fitted is not None:
                offset = 0.0
                if source is prior and prior is not profile and model_id in self._weights and prior_id in self._weights:
                    offset = float(self._weights[model_id] - self._weights[prior_id])
                return fitted, scale, offset
        return None

    @staticmethod
    def _option_fields(options: RunOptions) -> dict[str, Any]:
        return dict(
            vae_tiling=options.vae_tiling,
            model_cpu_offload=options.model_cpu_offload,
            streamed_decode=options.streamed_decode,
        )

    def _fitted(self, request: GenerationRequest, options: RunOptions) -> float | None:
        found = self._model(request.model_id, options)
        if found is None:
            return None
        fitted, scale, offset = found
        if isinstance(fitted, _PriorFit):
            value = fitted.predict(request.num_frames, request.width, request.height, request.guidance_scale)
        else:
            value = fitted.predict(request.num_frames, request.width, request.height)
        return max(0.0, value + offset) * scale

    def estimate(self, request: GenerationRequest, options: RunOptions = RunOptions()) -> int | None:
        """Predicted memory cap this request needs (bytes), or ``None`` when nothing is known for the model."""
        with self._lock:
            fitted = self._fitted(request, options)
            setting = self._setting(request, options)
            floors = [
                o["cap_bytes"] + 1
                for o in self._profile(request.model_id).outcomes
                if not o["ok"] and self._same_options(o, setting) and _dominates(setting, o)
            ]
        if fitted is None and not floors:
            return None
        return int(max([fitted or 0, *floors]))

    @staticmethod
    def _same_options(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        return (
            a["vae_tiling"] == b["vae_tiling"]
            and a["model_cpu_offload"] == b["model_cpu_offload"]
            and a.get("streamed_decode", False) == b.get("streamed_decode", False)
        )

    def fits(self, request: GenerationRequest, options: RunOptions, budget: int | None) -> bool:
        """Whether the request is predicted to run under ``budget`` (``None``: no limit)."""
        if budget is None:
            return True
        setting = self._setting(request, options)
        with self._lock:
            outcomes = list(self._profile(request.model_id).outcomes)
        for outcome in reversed(outcomes):  # what really happened beats the fit; the newest evidence first
            if not self._same_options(outcome, setting):
                continue
            if not outcome["ok"] and outcome["cap_bytes"] >= budget and _dominates(setting, outcome):
                return False
            if outcome["ok"] and outcome["cap_bytes"] <= budget and _dominates(outcome, setting):
                return True
        estimate = self.estimate(request, options)
        if estimate is None:
            return True  # nothing known: let the run decide (and teach us)
        return estimate * (1 + self.margin) <= budget
