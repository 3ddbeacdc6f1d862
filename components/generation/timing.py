"""How long a request takes here: ``TimeModel`` learns each phase's time from finished runs and predicts it;
``EtaClock`` turns the prediction and the real elapsed time of the running phase into the ETA of an attempt.

Per model, hardware key and dtype (as the memory planner's profiles), kept as JSON in the data folder:

    load      seconds of a cold load (a warm worker keeps the model loaded: 0)
    denoise   a fixed part (text encoding, latents set-up) + seconds per step; both scale with the latent size
              (latent frames × latent height × latent width; Wan's VAE packs 4 frames and 8×8 pixels into one)
    decode    seconds, scaling with frames × pixels
    export    seconds, scaling with frames × pixels

The first run after a load pays one-off costs (thread pools, kernel selection) in its other phases too, so the fixed
part of denoising, decode and export are kept apart for cold runs (the model just loaded) and warm ones; a prediction
takes the matching kind, else the other.

A prediction is the nearest measured size's value (the low median of its last 5 runs: one run slowed by another
process does not move it) × (size ratio)^p, with p fitted on the log–log samples once two sizes are known (clamped
to [0, 2]). After the first run alone p = 1 — the cold-start prior: linear in the size, exact at the size that ran.
Nothing known for a model: no estimate, never a guess from another model. The per-step time is measured from the
progress events (the median time between steps), so the fixed part of denoising does not inflate it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from components.system.files import write_text_atomic

__all__ = ["PHASES", "Eta", "EtaClock", "PhaseEstimate", "TimeModel", "latent_size"]

PHASES = ("load", "denoise", "decode", "export")
_STORE_VERSION = 1
_MAX_SAMPLES = 64  # per quantity: old runs give way to new ones
_RECENT = 5  # the runs at one size whose median is that size's value
_MAX_EXPONENT = 2.0
_COLD = ":cold"  # the suffix of a quantity measured on the first run after a load
_SPEED_BOUNDS = (0.5, 2.0)  # how far the measured speed of a running phase may rescale the phases still to come


def latent_size(request: GenerationRequest) -> int:
    """Latent frames × latent height × latent width: what one denoising step works on."""
    return ((request.num_frames - 1) // 4 + 1) * max(1, request.height // 8) * max(1, request.width // 8)


def _pixels(request: GenerationRequest) -> int:
    return request.num_frames * request.width * request.height


_SLOW_SWITCHES = ("group_offload", "layerwise_casting", "sequential_offload")


def _switches(options: RunOptions) -> str:
    """The slower memory switches in a key only when on, so the keys learnt before they existed still hold."""
    return "".join(f",{name}=1" for name in _SLOW_SWITCHES if getattr(options, name))


def _same_switches(key: str, options: RunOptions) -> bool:
    """Whether samples under ``key`` ran with the slower switches ``options`` have (a fallback across tiling or
    offload settings is close enough; across a 10× slower sequential offload it is not)."""
    return all((f",{name}=1" in key) == getattr(options, name) for name in _SLOW_SWITCHES)


def _step_key(options: RunOptions) -> str:
    return f"step|offload={int(options.model_cpu_offload)},compile={int(options.compile)}{_switches(options)}"


def _decode_key(options: RunOptions) -> str:
    return f"decode|tiling={int(options.vae_tiling)},offload={int(options.model_cpu_offload)}{_switches(options)}"


def _predict(samples: Sequence[Sequence[float]], size: float) -> float | None:
    """The value at ``size`` from ``[size, value]`` samples (see the module's docstring), ``None`` without any."""
    if not samples:
        return None
    by_size: dict[float, list[float]] = {}
    for sample_size, value in samples:
        by_size.setdefault(float(sample_size), []).append(max(float(value), 0.0))
    values = {s: statistics.median_low(v[-_RECENT:]) for s, v in by_size.items()}
    exponent = 1.0
    points = [(math.log(s), math.log(v)) for s, v in values.items() if s > 0 and v > 0]
    if len(points) >= 2:
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        spread = sum((x - mean_x) ** 2 for x, _ in points)
        if spread > 0:
            slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
            exponent = min(max(slope, 0.0), _MAX_EXPONENT)
    nearest = min(values, key=lambda s: abs(math.log(max(s, 1e-9)) - math.log(max(size, 1e-9))))
    if nearest <= 0:
        return values[nearest]
    return values[nearest] * (size / nearest) ** exponent


@dataclass(frozen=True)
class PhaseEstimate:
    """Predicted seconds of each phase of one run (``load_s`` is 0 when the worker has the model loaded)."""

    load_s: float
    denoise_s: float
    decode_s: float
    export_s: float
    step_s: float  # one denoising step

    @property
    def total_s(self) -> float:
        return self.load_s + self.denoise_s + self.decode_s + self.export_s

    def phase_s(self, phase: str) -> float:
        """The seconds of ``phase`` (one of ``PHASES``)."""
        return float(getattr(self, f"{phase}_s"))

    def after_s(self, phase: str) -> float:
        """The seconds of the phases that follow ``phase``."""
        return sum(self.phase_s(p) for p in PHASES[PHASES.index(phase) + 1 :])

    def to_dict(self) -> dict[str, float]:
        return {
            "load_s": self.load_s,
            "denoise_s": self.denoise_s,
            "decode_s": self.decode_s,
            "export_s": self.export_s,
            "step_s": self.step_s,
            "total_s": self.total_s,
        }


class TimeModel:
    """Learns how long each phase takes from finished runs; predicts a request's phases (``estimate``).

    ``path``: the JSON store (``None``: in memory only). ``hardware``: ``hardware_key`` of the probe, the same key as
    the memory planner's, so timings of one machine never predict another's.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, hardware: str = "cpu", dtype: str = "bfloat16"):
        self.path = Path(path) if path is not None else None
        self.hardware, self.dtype = hardware, dtype
        self._lock = threading.Lock()
        self._profiles: dict[str, dict[str, list[list[float]]]] = {}
        if self.path is not None and self.path.exists():
            self._load()

    def _key(self, model_id: str, dtype: str | None = None) -> str:
        return f"{model_id}|{self.hardware}|{dtype or self.dtype}"

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())  # type: ignore[union-attr]
            profiles = data.get("profiles", {})
            self._profiles = {
                str(key): {str(q): [[float(a), float(b)] for a, b in samples] for q, samples in quantities.items()}
                for key, quantities in profiles.items()
            }
        except (OSError, ValueError, TypeError, AttributeError):
            self._profiles = {}  # an unreadable store is a fresh start, not a failure

    def _save(self) -> None:
        if self.path is not None:
            payload = {"version": _STORE_VERSION, "profiles": self._profiles}
            write_text_atomic(self.path, json.dumps(payload, indent=1, sort_keys=True))

    # -- learning -------------------------------------------------------------------------------------------------
    def record(self, output: GenerationOutput, *, step_s: float | None = None, fixed_s: float | None = None) -> None:
        """Learn from a finished run. ``step_s``, ``fixed_s``: the per-step time and the fixed part of denoising as
        measured from the progress events (``EtaClock.step_s``, ``EtaClock.fixed_s``); without ``fixed_s`` the fixed
        part is what the steps leave of the denoising time, without ``step_s`` the whole time counts as steps."""
        request, timings = output.request, output.timings
        model_id = output.model_id or request.model_id
        samples: list[tuple[str, float, float]] = []
        load = float(timings.get("load", 0.0))
        if load > 0:  # 0: the worker had the model loaded, which says nothing about a cold load
            samples.append(("load", 1.0, load))
        kind = _COLD if load > 0 else ""
        denoise = float(timings.get("denoise", 0.0))
        if not output.denoise_skipped and output.steps_completed > 0 and denoise > 0:
            steps = output.steps_completed
            per_step = step_s if step_s is not None and step_s > 0 else denoise / steps
            per_step = min(per_step, denoise / steps)
            fixed = fixed_s if fixed_s is not None and step_s is not None else denoise - per_step * steps
            latent = latent_size(request)
            samples += [(_step_key(output.options), latent, per_step), ("denoise_fixed" + kind, latent, fixed)]
        pixels = _pixels(request)
        if "decode" in timings:
            samples.append((_decode_key(output.options) + kind, pixels, float(timings["decode"])))
        if "export" in timings:
            samples.append(("export" + kind, pixels, float(timings["export"])))
        with self._lock:
            profile = self._profiles.setdefault(self._key(model_id, output.dtype), {})
            for quantity, size, value in samples:
                kept = profile.setdefault(quantity, [])
                kept.append([float(size), max(value, 0.0)])
                del kept[:-_MAX_SAMPLES]
            self._save()

    # -- prediction -----------------------------------------------------------------------------------------------
    def estimate(
        self, request: GenerationRequest, options: RunOptions = RunOptions(), *, loaded: bool = False
    ) -> PhaseEstimate | None:
        """Predicted seconds per phase for ``request`` with ``options``; ``loaded``: the worker has the model
        loaded (no load time). ``None`` when a phase's time is unknown for this model here."""
        with self._lock:
            profile = self._profiles.get(self._key(request.model_id))
            if not profile:
                return None

            warmth = ("", _COLD) if loaded else (_COLD, "")

            def quantity(exact: str, family: str | None = None) -> list[list[float]]:
                """The samples for these options and this warmth, else the other warmth, else (with ``family``)
                any options of the same phase."""
                for kind in warmth:
                    if profile.get(exact + kind):
                        return profile[exact + kind]
                if family is None:
                    return []
                return [
                    s
                    for key, samples in profile.items()
                    if key.startswith(family) and _same_switches(key, options)
                    for s in samples
                ]

            latent, pixels = latent_size(request), _pixels(request)
            load = 0.0 if loaded else _predict(profile.get("load", []), 1.0)
            step = _predict(quantity(_step_key(options), "step|"), latent)
            fixed = _predict(quantity("denoise_fixed"), latent) or 0.0
            decode = _predict(quantity(_decode_key(options), "decode|"), pixels)
            export = _predict(quantity("export"), pixels)
        if load is None or step is None or decode is None or export is None:
            return None
        return PhaseEstimate(load, fixed + step * request.steps, decode, export, step)


@dataclass(frozen=True)
class Eta:
    """Seconds left: ``eta_s`` for the whole attempt, ``phase_eta_s`` for the running phase (``None``: unknown)."""

    eta_s: float | None
    phase_eta_s: float | None

    def data(self) -> dict[str, float | None]:
        """The keys a ``ServiceEvent``'s data carries."""
        return {
            "eta_s": None if self.eta_s is None else round(self.eta_s, 2),
            "phase_eta_s": None if self.phase_eta_s is None else round(self.phase_eta_s, 2),
        }


class EtaClock:
    """The ETA of one running attempt, updated at each phase and progress event.

    At the start of a phase: its predicted time plus the phases after it. During denoising: the measured seconds
    per step (between the first and the latest step) × the steps left, plus the predicted decode and export; during
    decoding: the measured seconds per decoded unit × the units left, plus the predicted export. Once a phase runs
    faster or slower than predicted, the phases still to come are rescaled by that speed (at most ×2 either way).

    For the time model it keeps what denoising cost: ``step_s``, the median time between steps (a moment of load
    from another process does not become the machine's speed), and ``fixed_s``, the time before the first step
    less one step (text encoding, latents set-up).
    """

    def __init__(self, estimate: PhaseEstimate | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.estimate = estimate
        self._clock = clock
        self._phase: str | None = None
        self._phase_started = 0.0
        self._first: tuple[int, float] | None = None  # (step, time) of the first progress event of the phase
        self._speed = 1.0  # measured time / predicted time of the phase that ran last with progress
        self._last: tuple[int, float] | None = None  # denoising: the latest progress event
        self._intervals: list[float] = []  # denoising: seconds per step between consecutive progress events
        self._first_gap: tuple[int, float] | None = None  # denoising: (first step seen, seconds from the start to it)

    @property
    def step_s(self) -> float | None:
        """Denoising's seconds per step, once two steps were seen (the median between consecutive steps)."""
        return statistics.median(self._intervals) if self._intervals else None

    @property
    def fixed_s(self) -> float | None:
        """Denoising's time before its first step, less that step's own time (``None`` until ``step_s`` is)."""
        if self._first_gap is None or self.step_s is None:
            return None
        first_step, gap = self._first_gap
        return max(gap - first_step * self.step_s, 0.0)

    def _rest(self, phase: str) -> float | None:
        if self.estimate is None or phase not in PHASES:
            return None
        return self.estimate.after_s(phase) * self._speed

    def phase(self, phase: str) -> Eta:
        """``phase`` started."""
        self._phase, self._phase_started, self._first = phase, self._clock(), None
        if self.estimate is None or phase not in PHASES:
            return Eta(None, None)
        own = self.estimate.phase_s(phase) * self._speed
        rest = self._rest(phase)
        return Eta(own + (rest or 0.0), own)

    def progress(self, phase: str, step: int, total: int) -> Eta:
        """``step`` of ``total`` of ``phase`` (``denoise``, ``decode``) done."""
        now = self._clock()
        if phase != self._phase:  # a progress event without its phase event: the phase starts here
            self.phase(phase)
        if self._first is None:
            self._first = (step, now)
        first_step, first_at = self._first
        if phase == "denoise":
            if self._first_gap is None:
                self._first_gap = (step, now - self._phase_started)
            if self._last is not None and step > self._last[0]:
                self._intervals.append((now - self._last[1]) / (step - self._last[0]))
            self._last = (step, now)
        if step > first_step:
            rate = (now - first_at) / (step - first_step)
        elif phase == "denoise" and self.estimate is not None:
            rate = self.estimate.step_s * self._speed
        else:
            rate = (now - self._phase_started) / max(step, 1)
        if phase == "denoise" and self.estimate is not None and step > first_step and self.estimate.step_s > 0:
            self._speed = min(max(rate / self.estimate.step_s, _SPEED_BOUNDS[0]), _SPEED_BOUNDS[1])
        own = rate * max(total - step, 0)
        rest = self._rest(phase)
        return Eta(None if rest is None else own + rest, own)
