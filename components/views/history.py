"""This app's past results, for the studio's gallery: the videos in the outputs folder, newest first, each with the
prompt and settings the request journal kept for it; and the name a new video file gets.

A video is named ``<YYYYMMDD-HHMMSS>-<prompt slug>-<correlation id>-<attempt>.mp4`` so a folder listing reads as a
history; the journal (read here, never written) holds what made it. A file whose request the journal no longer
holds (retention, another data folder) is still listed, with its settings unknown.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


class Journal(Protocol):
    """What is read of ``components.journal.RequestJournal`` (not imported: the journal imports the views)."""

    def get(self, request_id: str) -> Any: ...


__all__ = ["HistoryItem", "HistoryPage", "history_markdown", "history_page", "slug", "video_file_name"]

SLUG_CHARS = 40
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str, limit: int = SLUG_CHARS) -> str:
    """``"A paper boat, drifting!"`` → ``"a-paper-boat-drifting"``: ``[a-z0-9-]``, at most ``limit`` characters,
    accents folded, ``"video"`` when nothing is left."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    words = _NOT_SLUG.sub("-", folded).strip("-")
    return words[:limit].rstrip("-") or "video"


def video_file_name(prompt: str, correlation_id: str, attempt: int, at: datetime | float) -> str:
    """``<YYYYMMDD-HHMMSS>-<slug>-<correlation_id>-<attempt>.mp4``, the time local to the machine."""
    when = at if isinstance(at, datetime) else datetime.fromtimestamp(at)
    return f"{when:%Y%m%d-%H%M%S}-{slug(prompt)}-{correlation_id}-{attempt}.mp4"


@dataclass(frozen=True)
class HistoryItem:
    """One past video: its file, when it was made, and — when the journal holds its request — what made it."""

    video_path: str
    file_name: str
    made_at: float
    correlation_id: str | None = None
    request: Mapping[str, Any] | None = None
    attempts: int | None = None
    degraded: bool = False
    changes: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", "")) if self.request else ""

    def caption(self) -> str:
        """A gallery caption: the prompt (short) and the size, or the file name when the request is unknown."""
        when = datetime.fromtimestamp(self.made_at).strftime("%Y-%m-%d %H:%M")
        if not self.request:
            return f"{when} · {self.file_name}"
        prompt = self.prompt if len(self.prompt) <= 60 else self.prompt[:59] + "…"
        size = f"{self.request.get('width')}×{self.request.get('height')}, {self.request.get('num_frames')} frames"
        return f"{when} · {prompt} · {size}" + (" · degraded" if self.degraded else "")


@dataclass(frozen=True)
class HistoryPage:
    """One page of the gallery (``page`` counts from 0), and how many there are."""

    items: tuple[HistoryItem, ...]
    page: int
    pages: int
    total: int

    def label(self) -> str:
        if not self.total:
            return "No videos yet: the ones you make appear here."
        return f"Page {self.page + 1} of {self.pages} · {self.total} video{'s' if self.total != 1 else ''}"


def history_page(outputs_dir: str | Path, journal: Journal | None, *, page: int = 0, per_page: int = 12) -> HistoryPage:
    """The ``page``-th page of videos in ``outputs_dir``, newest first (a page past the end is the last one)."""
    folder = Path(outputs_dir)
    files = [p for p in folder.glob("*.mp4") if p.is_file() and not p.name.startswith(".")] if folder.is_dir() else []
    dated = sorted(((p.stat().st_mtime, p) for p in files), key=lambda pair: (pair[0], pair[1].name), reverse=True)
    pages = max(1, math.ceil(len(dated) / per_page))
    page = min(max(0, page), pages - 1)
    chosen = dated[page * per_page : (page + 1) * per_page]
    return HistoryPage(tuple(_item(path, mtime, journal) for mtime, path in chosen), page, pages, len(dated))


def _item(path: Path, mtime: float, journal: Journal | None) -> HistoryItem:
    """The journal's entry for a video is the one whose result names this very file."""
    for candidate in _correlation_ids(path.stem):
        entry = journal.get(candidate) if journal is not None else None
        if entry is None or getattr(entry.status, "value", entry.status) != "completed" or not entry.result:
            continue
        result = entry.result
        if result.get("video") != path.name:
            continue
        return HistoryItem(
            str(path),
            path.name,
            mtime,
            correlation_id=entry.id,
            request=dict(result.get("request") or entry.request or {}),  # what ran, after any recovery
            attempts=result.get("attempts"),
            degraded=bool(result.get("degraded")),
            changes=tuple(result.get("changes") or ()),
        )
    return HistoryItem(str(path), path.name, mtime)


def _correlation_ids(stem: str) -> list[str]:
    """The ids a file name may end with, before ``-<attempt>``, longest first (an id may hold ``-`` itself)."""
    parts = stem.split("-")
    if len(parts) < 2 or not parts[-1].isdigit():
        return []
    body = parts[:-1]
    return ["-".join(body[start:]) for start in range(len(body))]


def history_markdown(item: HistoryItem | None) -> str:
    """The selected video's details: prompt, settings, how it was made, and its request id."""
    if item is None:
        return "Select a video to see its prompt and settings."
    when = datetime.fromtimestamp(item.made_at).strftime("%Y-%m-%d %H:%M:%S")
    if not item.request:
        return f"**{item.file_name}** · {when}\n\nIts request is no longer in the journal: settings unknown."
    r = item.request
    lines = [
        f"**{item.prompt}**",
        f"{r.get('width')}×{r.get('height')} · {r.get('num_frames')} frames · {r.get('steps')} steps · "
        f"guidance {r.get('guidance_scale')} · seed {r.get('seed')} · {r.get('fps')} fps · {r.get('model_id')}",
    ]
    if r.get("negative_prompt"):
        lines.append(f"Negative prompt: {r['negative_prompt']}")
    made = f"{when} · request `{item.correlation_id}`"
    if item.attempts and item.attempts > 1:
        made += f" · {item.attempts} attempts"
    lines.append(made + (" · **degraded preview**" if item.degraded else ""))
    if item.changes:
        lines.append("What we changed: " + "; ".join(item.changes))
    return "\n\n".join(lines)
