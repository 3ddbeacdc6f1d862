"""What the user reads: a plain-language catalogue per failure type, a scrubber, and the API error shape.

Nothing here ever shows a traceback, a token, or a file path outside the app's own data folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from recovery.taxonomy import EnhancedFailureType, ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = [
    "Guidance",
    "CATALOGUE",
    "FAILURE_LABELS",
    "STRATEGY_LABELS",
    "guidance_for",
    "scrub",
    "format_bytes",
    "format_duration",
    "api_error",
    "failure_label",
    "strategy_label",
]

F = EnhancedFailureType


@dataclass(frozen=True)
class Guidance:
    """The user-facing text for one failure type."""

    user_message: str
    actionable_steps: tuple[str, ...]
    alternative_options: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    estimated_resolution_time: timedelta = timedelta(minutes=1)


def _g(message: str, steps: tuple[str, ...], options: tuple[str, ...], minutes: float) -> Guidance:
    return Guidance(
        message,
        steps,
        tuple({"option": option} for option in options),
        timedelta(minutes=minutes),
    )


CATALOGUE: dict[EnhancedFailureType, Guidance] = {
    F.MODEL_DOWNLOAD_FAILURE: _g(
        "The model could not be downloaded. We retry automatically and resume where it stopped.",
        ("Check your internet connection", "Check that the model id is spelled correctly"),
        ("Use the built-in model, which needs no download",),
        5,
    ),
    F.MODEL_CORRUPTION_DETECTED: _g(
        "Some model files are damaged. We are fetching fresh copies of the damaged files.",
        (
            "Wait for the repair to finish",
            "If it keeps happening, delete the model in the Models tab and download it again",
        ),
        ("Use another installed model while this one is repaired",),
        5,
    ),
    F.MODEL_VERSION_MISMATCH: _g(
        "This model needs a different version than the one installed.",
        ("Pick a model revision that exists", "Update the app's libraries to the versions it lists"),
        ("Use the default model",),
        10,
    ),
    F.MODEL_LOADING_TIMEOUT: _g(
        "The model took too long to load. We restarted the generator and are trying again.",
        ("Wait a minute and try again", "Close other programs that use a lot of memory"),
        ("Use a smaller model",),
        2,
    ),
    F.MODEL_INTEGRITY_FAILURE: _g(
        "Some model files do not match their checksums. We re-download the files that differ.",
        ("Wait for the re-download to finish", "Make sure no other program writes to the model folder"),
        ("Use another installed model meanwhile",),
        5,
    ),
    F.MODEL_COMPATIBILITY_ERROR: _g(
        "This model does not work with this kind of generation.",
        ("Choose a text-to-video model", "Check the model's page for the task it supports"),
        ("Use the default model",),
        2,
    ),
    F.VRAM_EXHAUSTION: _g(
        "Your video needed more memory than this machine has free. We reduce the settings to fit.",
        ("Use fewer frames or a smaller size", "Close other programs that use the graphics card"),
        ("Generate a shorter clip first", "Generate at a lower resolution"),
        1,
    ),
    F.STORAGE_SPACE_INSUFFICIENT: _g(
        "There is not enough free disk space.",
        ("Free some disk space", "Delete models you no longer use in the Models tab"),
        ("Use the built-in model, which is small",),
        10,
    ),
    F.NETWORK_CONNECTIVITY_LOSS: _g(
        "The model server cannot be reached right now.",
        ("Check your internet connection", "Try again in a few minutes"),
        ("Use a model that is already downloaded",),
        5,
    ),
    F.BANDWIDTH_LIMITATION: _g(
        "The download is slower than expected. We keep going and resume if it stops.",
        ("Keep this page open", "Try again later if your connection is busy"),
        ("Use a model that is already downloaded",),
        15,
    ),
    F.HARDWARE_OPTIMIZATION_FAILURE: _g(
        "A speed-up does not work on this hardware. We turned it off and continue.",
        ("No action needed",),
        ("Turn off compilation (the speed-up) in the settings",),
        1,
    ),
    F.GENERATION_PIPELINE_ERROR: _g(
        "The generation produced an unusable result. We try again with safer settings.",
        ("Try another seed", "Use fewer steps or a smaller size"),
        ("Generate a shorter clip",),
        1,
    ),
    F.SYSTEM_RESOURCE_ERROR: _g(
        "The generator stopped unexpectedly. We restarted it.",
        ("Try again", "Close other programs if this keeps happening"),
        ("Use smaller settings",),
        2,
    ),
    F.DEPENDENCY_MISSING: _g(
        "A component the app needs is not installed.",
        ("Install the missing package with the command shown in the details", "Restart the app"),
        ("Use a different output format",),
        5,
    ),
    F.INVALID_PARAMETERS: _g(
        "Some settings are not valid. We corrected what we could and said what we changed.",
        ("Check the highlighted settings", "Use the suggested values"),
        ("Reset the settings to their defaults",),
        1,
    ),
    F.UNSUPPORTED_OPERATION: _g(
        "This machine or model cannot do what was asked.",
        ("Choose settings this machine supports", "Use a smaller size or fewer frames"),
        ("Run the app on a machine with a graphics card",),
        1,
    ),
    F.PERMISSION_DENIED: _g(
        "Access was refused: the model may need approval or a token, or a folder is read-only.",
        ("Request access on the model's page and log in with your token", "Check that the data folder is writable"),
        ("Use a public model",),
        10,
    ),
}


def guidance_for(failure_type: EnhancedFailureType) -> Guidance:
    """The catalogue entry for ``failure_type``."""
    return CATALOGUE[failure_type]


_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*?(?=^\S|\Z)", re.DOTALL | re.MULTILINE)
_FRAME = re.compile(r"^\s*File \"[^\"]*\", line \d+.*$\n?", re.MULTILINE)
_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{6,}\b")
_BEARER = re.compile(r"\bBearer\s+\S+", re.IGNORECASE)
_SECRET = re.compile(r"\b(token|api[_-]?key|password|secret)([=:]\s*)\S+", re.IGNORECASE)
_PATH = re.compile(r"(?<![\w/:.\-~])(?:~|[A-Za-z]:\\|/)[^\s'\"`<>|,;()\[\]]+")


def scrub(text: str, *, data_dir: str | None = None) -> str:
    """Remove tracebacks, tokens (``hf_…``, ``Bearer …``, ``token=…``) and paths outside ``data_dir``."""
    text = _FRAME.sub("", _TRACEBACK.sub("", text))
    text = _BEARER.sub("Bearer [redacted]", _TOKEN.sub("[redacted]", text))
    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    keep = data_dir.rstrip("/") + "/" if data_dir else None
    return _PATH.sub(lambda m: m.group(0) if keep and m.group(0).startswith(keep) else "[path]", text).strip()


def format_bytes(count: float) -> str:
    """Sizes in binary units, the same everywhere (memory, downloads, disk): ``999`` → ``"999 B"``,
    ``419430400`` → ``"400 MiB"``, ``2147483648`` → ``"2.0 GiB"`` (one decimal below 100 of a unit)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B" or abs(value) >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


def format_duration(duration: timedelta | None) -> str | None:
    """``timedelta(minutes=5)`` → ``"5 minutes"``; seconds under a minute stay seconds."""
    if duration is None:
        return None
    seconds = int(duration.total_seconds())
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = round(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


#: What the user is told when no rule recognised the error: not a claim about what went wrong.
UNRECOGNISED = Guidance(
    "An error we do not recognise stopped the generation ({error}). We tried the general remedies; we cannot say more "
    "about the cause.",
    (
        "Try again: some errors do not come back.",
        "If it keeps happening, report it with the error text below (it is recorded among the unrecognised errors).",
    ),
)


#: Words for one cause within a failure type, where the type's own words would mislead (a repository that does not
#: exist is a download failure, but not one that retrying or reconnecting fixes).
REASON_GUIDANCE: dict[str, Guidance] = {
    "repository_not_found": Guidance(
        "{model} was not found on the model hub: check its id.",
        (
            "Check the id: owner/name, exactly as on the model's page (for example Wan-AI/Wan2.1-T2V-1.3B-Diffusers).",
            "A private model is reported as not found without a token: set HF_TOKEN if it is yours.",
            "Or pick a model from the list.",
        ),
    ),
    "other_processes": Guidance(
        "Another program is using the graphics card's memory, so this video did not fit in what was left.",
        (
            "Close the other program that uses the graphics card (nvidia-smi lists them), then try again.",
            "Or use fewer frames or a smaller size: we lower them to fit what is free.",
        ),
    ),
    "fragmentation": Guidance(
        "The graphics card's memory was fragmented: free in total, but not in one piece. We emptied the cache "
        "and retried.",
        (
            "Try again: the worker runs with expandable memory segments, which avoid most fragmentation.",
            "If it repeats, restart the app to start from a clean graphics card.",
        ),
    ),
}


def api_error(ctx: ErrorContext, result: RecoveryResult | None = None, *, data_dir: str | None = None) -> dict:
    """The spec's API error shape, every text scrubbed. An error no rule recognised says so in its user message
    instead of claiming the type it was given so the engine could act."""
    recognised = ctx.system_state.get("recognised", True) is not False
    guidance = guidance_for(ctx.failure_type)
    user_message = result.user_message if result and result.user_message else guidance.user_message
    steps = result.actionable_steps if result and result.actionable_steps else list(guidance.actionable_steps)
    if not recognised:
        user_message = UNRECOGNISED.user_message.format(error=type(ctx.original_error).__name__)
        steps = list(UNRECOGNISED.actionable_steps)
    elif (reasoned := REASON_GUIDANCE.get(str(ctx.system_state.get("reason")))) is not None:
        user_message = reasoned.user_message.format(model=ctx.model_id or "The model")
        steps = list(reasoned.actionable_steps)
    if recognised and (cause := ctx.system_state.get("cause")):
        user_message = f"{user_message} ({cause})"
    eta = (
        result.estimated_resolution_time
        if result and result.estimated_resolution_time
        else (guidance.estimated_resolution_time)
    )
    return {
        "error": {
            "type": ctx.failure_type.value,
            "severity": ctx.severity.value,
            "message": scrub(result.message if result else str(ctx.original_error), data_dir=data_dir),
            "user_message": scrub(user_message, data_dir=data_dir),
            "recovery_attempted": result is not None,
            "recovery_success": bool(result and result.success),
            "actionable_steps": [scrub(step, data_dir=data_dir) for step in steps],
            "estimated_resolution_time": format_duration(eta),
        }
    }


#: A failure type in a few plain words, for a page; the type's value goes in a details line beside it.
FAILURE_LABELS: dict[EnhancedFailureType, str] = {
    F.MODEL_DOWNLOAD_FAILURE: "The model download failed",
    F.MODEL_CORRUPTION_DETECTED: "Damaged model files",
    F.MODEL_VERSION_MISMATCH: "The model needs other library versions",
    F.MODEL_LOADING_TIMEOUT: "The model took too long to load",
    F.MODEL_INTEGRITY_FAILURE: "Model files that fail their checksums",
    F.MODEL_COMPATIBILITY_ERROR: "A model that cannot make videos from text",
    F.VRAM_EXHAUSTION: "Not enough memory",
    F.STORAGE_SPACE_INSUFFICIENT: "Not enough disk space",
    F.NETWORK_CONNECTIVITY_LOSS: "The model server cannot be reached",
    F.BANDWIDTH_LIMITATION: "A slow download",
    F.HARDWARE_OPTIMIZATION_FAILURE: "A speed-up that fails on this hardware",
    F.GENERATION_PIPELINE_ERROR: "The generation went wrong",
    F.SYSTEM_RESOURCE_ERROR: "The generator stopped unexpectedly",
    F.DEPENDENCY_MISSING: "A package the app needs is missing",
    F.INVALID_PARAMETERS: "A setting that is not valid",
    F.UNSUPPORTED_OPERATION: "Something this machine or model cannot do",
    F.PERMISSION_DENIED: "Access refused",
}

#: What a strategy did, in plain words (past tense: it is shown once the strategy ran).
STRATEGY_LABELS: dict[RecoveryStrategy, str] = {
    RecoveryStrategy.IMMEDIATE_RETRY: "Tried again",
    RecoveryStrategy.INTELLIGENT_FALLBACK: "Switched to another model",
    RecoveryStrategy.AUTOMATIC_REPAIR: "Repaired the model files",
    RecoveryStrategy.PARAMETER_ADJUSTMENT: "Adjusted the settings",
    RecoveryStrategy.RESOURCE_OPTIMIZATION: "Freed memory by restarting the generator",
    RecoveryStrategy.USER_INTERVENTION: "Handed over to you",
    RecoveryStrategy.GRACEFUL_DEGRADATION: "Made a lower-quality preview",
}


def _words(value: str) -> str:
    return value.replace("_", " ").capitalize()


def failure_label(failure_type: EnhancedFailureType | str) -> str:
    """``vram_exhaustion`` → ``"Not enough memory"``; events carry the type's value, so a string is taken too (an
    unknown one is shown as words, never dropped)."""
    try:
        return FAILURE_LABELS[EnhancedFailureType(failure_type)]
    except ValueError:
        return _words(str(failure_type))


def strategy_label(strategy: RecoveryStrategy | str) -> str:
    """``parameter_adjustment`` → ``"Adjusted the settings"``; a string value is taken too."""
    try:
        return STRATEGY_LABELS[RecoveryStrategy(strategy)]
    except ValueError:
        return _words(str(strategy))
