"""The Protocols through which strategies reach the video domain; ``components/`` implements them.

A strategy whose port is not given reports "not applicable" instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from recovery.taxonomy import ErrorContext, RecoveryResult

__all__ = ["Adjustment", "ModelStorePort", "ParameterAdjuster", "ResourceFreer", "Degrader", "Notifier"]


@dataclass(frozen=True)
class Adjustment:
    """New request parameters and the plain lines that say what changed (``"num_frames 81 → 33 …"``).

    ``model_id``: another model to run them on (the memory ladder's smaller sibling, offered only with the
    caller's consent to another model); the engine switches to it as it does for a fallback."""

    parameters: Mapping[str, Any]
    changes: Sequence[str] = field(default_factory=tuple)
    label: str = ""
    model_id: str | None = None


@runtime_checkable
class ModelStorePort(Protocol):
    """Where models live: verify, repair, download, and which other models could stand in."""

    def verify(self, model_id: str) -> bool:
        """Quick check; ``True`` when the model's files are intact."""
        ...

    def repair(self, model_id: str) -> bool:
        """Re-fetch damaged or missing files; ``True`` when the model is whole again."""
        ...

    def download(self, model_id: str) -> bool:
        """Fetch (or resume) the model; ``True`` when it is available locally."""
        ...

    def fallback_candidates(self, model_id: str) -> Sequence[str]:
        """Other usable model ids for the same task, best first."""
        ...


@runtime_checkable
class ParameterAdjuster(Protocol):
    """Makes a request cheaper or valid; ``None`` when nothing smaller fits."""

    def adjust(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        """Parameters that avoid ``ctx``'s failure, or ``None``."""
        ...


@runtime_checkable
class ResourceFreer(Protocol):
    """Gives memory back or starts a fresh worker; returns what it did (empty: nothing to free)."""

    def free_memory(self, ctx: ErrorContext) -> Sequence[str]:
        """Release caches, collect garbage; lines saying what was freed."""
        ...

    def restart_worker(self, ctx: ErrorContext) -> Sequence[str]:
        """Replace the worker process; lines saying what was done."""
        ...


@runtime_checkable
class Degrader(Protocol):
    """Produces a labelled, lower-quality variant of a request that still gives the user something."""

    def degrade(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        """A degraded variant (with ``label``), or ``None`` when there is none."""
        ...


@runtime_checkable
class Notifier(Protocol):
    """Tells the user (toast, WebSocket) that their help is needed."""

    def notify(self, ctx: ErrorContext, result: RecoveryResult) -> None:
        """Deliver ``result``'s user message and steps."""
        ...
