"""What a user asks for and what a run produces: ``GenerationRequest`` and its validation, ``RunOptions`` (the
switches of one run), the recovery engine's parameters (``split_parameters``/``join_parameters``) and
``GenerationOutput``, the typed result that crosses back from the worker process.

Every rejection names the parameter and the value (``"`num_frames` must be 4k+1 (got 16)"``). The model family's
shape rules (Wan: frames ``4k+1``, sides divisible by 16; see ``components.generation.families``) can instead be
auto-corrected to the nearest valid value; each correction is returned as a line for the user, never applied
silently. Bounds are never auto-corrected: a value out of range is an error.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.families import ShapeRules, rules_for_model
from recovery.errors import InvalidParameterError

__all__ = [
    "CORRELATION_ID",
    "GenerationOutput",
    "GenerationRequest",
    "LIMITS",
    "Limits",
    "MODEL_ID_PATTERN",
    "RunOptions",
    "join_parameters",
    "split_parameters",
    "validate_request",
]

# `owner/name` as the hub spells repo ids; no path separators beyond the one slash, no `..`.
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
#: A request's correlation id (use with fullmatch): also a file-name part and a URL segment.
CORRELATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Limits:
    """Bounds on every parameter; the UI's sliders use the same numbers."""

    min_side: int = 16
    max_side: int = 1024
    side_multiple: int = 16
    min_frames: int = 1
    max_frames: int = 161
    frame_multiple: int = 4  # num_frames = frame_multiple * k + 1
    min_steps: int = 1
    max_steps: int = 100
    max_guidance: float = 20.0
    min_fps: int = 1
    max_fps: int = 60
    max_prompt_chars: int = 2000
    max_seed: int = 2**32 - 1


LIMITS = Limits()


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-video request. Defaults give a small, quick clip on the embedded model."""

    prompt: str
    negative_prompt: str = ""
    width: int = 256
    height: int = 256
    num_frames: int = 17
    steps: int = 4
    guidance_scale: float = 5.0
    seed: int | None = 0
    fps: int = 8
    model_id: str = EMBEDDED_MODEL_ID
    # May another model stand in when this one cannot run? ``None``: the default — yes on the configured default
    # model (``KINTSUGI_MODEL``), no for a model the user named (a named model is never silently replaced).
    allow_fallback: bool | None = None
    # Image-to-video: the conditioning image, a file the app prepared (checked, at the request's size).
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Build from a mapping, ignoring unknown keys (e.g. recovery bookkeeping); ``prompt`` is required."""
        if "prompt" not in data:
            raise InvalidParameterError(
                "`prompt` is required (got no prompt)", parameter="prompt", value=None, constraint="required"
            )
        _consent(data.get("allow_fallback"))
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class RunOptions:
    """Switches for one run. The memory ones cost speed or quality, so each is off unless a plan turns it on
    (``components.memory.rungs`` says what each saves and costs); ``compile`` is the one speed switch
    (``KINTSUGI_COMPILE``), turned off again when it fails on the machine. At most one offload switch is on."""

    vae_tiling: bool = False
    model_cpu_offload: bool = False  # CUDA only: keeps each model on the GPU only while it runs
    group_offload: bool = False  # CUDA only: block-level group offload, the next block prefetched on a CUDA stream
    layerwise_casting: bool = False  # the transformer stored in float8_e4m3fn, computed in the run dtype (CPU too)
    sequential_offload: bool = False  # CUDA only: every leaf module on the GPU only while it runs (slowest)
    compile: bool = False  # torch.compile (inductor) of the transformer: needs a C++ compiler (CPU) or Triton (CUDA)
    # Decode chunk by chunk straight into the mp4 writer (same frames, no whole video held): a decode OOM's retry
    streamed_decode: bool = False


def split_parameters(parameters: Mapping[str, Any]) -> tuple[GenerationRequest, RunOptions]:
    """The recovery engine's parameters (request fields plus ``"options"``) as a request and its options."""
    option_names = {f.name for f in fields(RunOptions)}
    options = RunOptions(**{k: v for k, v in dict(parameters.get("options") or {}).items() if k in option_names})
    return GenerationRequest.from_dict(dict(parameters)), options


def join_parameters(request: GenerationRequest, options: RunOptions) -> dict[str, Any]:
    """The inverse of ``split_parameters``. ``allow_fallback`` is left out: it is the user's consent, given to the
    engine's ``run`` as a flag, not a setting of a try (nor part of the circuit breaker's configuration bucket)."""
    data = request.to_dict()
    del data["allow_fallback"]
    return {**data, "options": asdict(options)}


@dataclass(frozen=True)
class GenerationOutput:
    """What one generation produced and what it cost (built in the worker, rebuilt from its fields in the app)."""

    video_path: str
    request: GenerationRequest
    options: RunOptions
    timings: Mapping[str, float]
    peak_memory_bytes: int | None
    device: str
    dtype: str
    frames: int
    width: int
    height: int
    frames_sha256: str
    steps_completed: int
    denoise_skipped: bool = False
    model_id: str = ""
    address_space_need: int | None = None  # CPU: the peak address-space growth, when this run set a new peak
    # Components run in another dtype than ``dtype`` because the hardware is slow in it, and why (for the result)
    component_dtypes: Mapping[str, str] = field(default_factory=dict)
    precision_note: str = ""

    def quality_kept(self, requested: GenerationRequest) -> float:
        """Pixel·frames made over pixel·frames asked, at most 1 (what a lowered setting cost the user)."""
        made = self.width * self.height * self.frames
        return min(1.0, made / (requested.width * requested.height * requested.num_frames))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able): what crosses the process boundary."""
        data = asdict(self)
        data["timings"] = dict(self.timings)
        data["component_dtypes"] = dict(self.component_dtypes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationOutput:
        values = dict(data)
        values["request"] = GenerationRequest.from_dict(dict(values["request"]))
        values["options"] = RunOptions(**dict(values["options"]))
        values["timings"] = dict(values["timings"])
        return cls(**values)


def _fail(parameter: str, value: Any, constraint: str) -> InvalidParameterError:
    return InvalidParameterError(
        f"`{parameter}` {constraint} (got {value!r})", parameter=parameter, value=value, constraint=constraint
    )


def _integer(parameter: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(parameter, value, "must be a whole number")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise _fail(parameter, value, "must be a whole number")
    return int(value)


def _in_range(parameter: str, value: int | float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise _fail(parameter, value, f"must be between {low} and {high}")


def _text(parameter: str, value: Any, limit: int, *, required: bool) -> str:
    if not isinstance(value, str):
        raise _fail(parameter, value, "must be text")
    if "\x00" in value:
        raise _fail(parameter, "<text with a NUL character>", "must not contain NUL characters")
    if required and not value.strip():
        raise _fail(parameter, value, "must not be empty")
    if len(value) > limit:
        raise _fail(parameter, f"<{len(value)} characters>", f"must be at most {limit} characters")
    return value


def _nearest_multiple(value: int, multiple: int, low: int, high: int) -> int:
    candidate = max(multiple, round(value / multiple) * multiple)
    return min(max(candidate, low), high)


def _consent(allow: object) -> None:
    """``allow_fallback`` is true, false or null: any other value is refused, named (never read as truthy)."""
    if allow is not None and not isinstance(allow, bool):
        raise InvalidParameterError(
            f"`allow_fallback` must be true, false or null (got {allow!r:.80})",
            parameter="allow_fallback",
            value=allow,
            constraint="bool or null",
        )


def validate_request(
    request: GenerationRequest,
    *,
    limits: Limits = LIMITS,
    auto_correct: bool = True,
    rng: random.Random | None = None,
    rules: ShapeRules | None = None,
) -> tuple[GenerationRequest, list[str]]:
    """Check every field; return the request to run and the corrections made (one line each).

    ``rules`` are the model family's shape rules (default: those of the family the model id is known to be of,
    else Wan's). With ``auto_correct=False`` a shape the family cannot use (e.g. Wan: frames not 4k+1, a side not
    divisible by 16) is an error instead of a correction. A missing seed is drawn here so that the result is
    reproducible.
    """
    corrections: list[str] = []
    prompt = _text("prompt", request.prompt, limits.max_prompt_chars, required=True)
    _consent(request.allow_fallback)
    negative = _text("negative_prompt", request.negative_prompt, limits.max_prompt_chars, required=False)
    model_id = request.model_id
    if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id) or ".." in model_id:
        raise _fail("model_id", model_id, "must look like owner/name (letters, digits, '-', '_', '.')")
    rules = rules or rules_for_model(model_id)
    if request.image is not None and not isinstance(request.image, str):
        raise _fail("image", "<not a prepared image>", "must be an image the app prepared")

    sides: dict[str, int] = {}
    for name in ("width", "height"):
        value = _integer(name, getattr(request, name))
        _in_range(name, value, limits.min_side, limits.max_side)
        if value % rules.side_multiple:
            if not auto_correct:
                raise _fail(name, value, f"must be divisible by {rules.side_multiple}")
            fixed = _nearest_multiple(value, rules.side_multiple, limits.min_side, limits.max_side)
            rule = f"{rules.label} needs sides divisible by {rules.side_multiple}"
            corrections.append(f"{name} {value} → {fixed} ({rule})")
            value = fixed
        sides[name] = value

    frames = _integer("num_frames", request.num_frames)
    _in_range("num_frames", frames, limits.min_frames, limits.max_frames)
    if not rules.frames_ok(frames):
        if not auto_correct:
            raise _fail("num_frames", frames, f"must be {rules.frame_multiple}k+1")
        fixed = _nearest_multiple(frames - 1, rules.frame_multiple, 0, limits.max_frames - 1) + 1
        corrections.append(f"num_frames {frames} → {fixed} ({rules.label} needs {rules.frame_multiple}k+1 frames)")
        frames = fixed

    steps = _integer("steps", request.steps)
    _in_range("steps", steps, limits.min_steps, limits.max_steps)
    if steps < rules.min_steps:
        if not auto_correct:
            raise _fail("steps", steps, f"must be at least {rules.min_steps} for {rules.label}")
        corrections.append(f"steps {steps} → {rules.min_steps} ({rules.label} needs at least {rules.min_steps})")
        steps = rules.min_steps
    guidance = request.guidance_scale
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, (int, float))
        or (isinstance(guidance, float) and not math.isfinite(guidance))
    ):
        raise _fail("guidance_scale", guidance, "must be a finite number")
    _in_range("guidance_scale", guidance, 0.0, limits.max_guidance)
    fps = _integer("fps", request.fps)
    _in_range("fps", fps, limits.min_fps, limits.max_fps)

    seed = request.seed
    if seed is None:
        seed = (rng or random.SystemRandom()).randint(0, limits.max_seed)
        corrections.append(f"seed chosen at random: {seed} (reuse it to get the same video)")
    seed = _integer("seed", seed)
    _in_range("seed", seed, 0, limits.max_seed)

    checked = replace(
        request,
        prompt=prompt,
        negative_prompt=negative,
        num_frames=frames,
        steps=steps,
        guidance_scale=float(guidance),
        fps=fps,
        seed=seed,
        width=sides["width"],
        height=sides["height"],
    )
    return checked, corrections
