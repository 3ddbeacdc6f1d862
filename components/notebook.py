"""Kintsugi in a notebook: ``Studio`` generates with recovery and returns results that display themselves.

    from components.notebook import Studio
    studio = Studio()
    result = studio.generate("a paper boat", num_frames=17)   # tqdm progress over the denoising steps
    result                                                     # the video inline, the timeline, what we changed

The same service, validation and recovery as the web app; nothing here is notebook-only logic.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.generation.images import ImageLimits, attach_image
from components.generation.request import GenerationRequest
from components.service import GenerationService
from components.settings import Settings
from components.views.charts import MetricsDashboard, dashboard
from components.views.presenters import timeline_line
from components.views.reports import GenerationResult, ServiceEventKind
from recovery.errors import GenerationFailedError, InvalidParameterError

__all__ = ["Studio", "NotebookResult", "connect"]

_INLINE_LIMIT = 20_000_000  # bytes; larger videos are linked, not embedded


@dataclass
class NotebookResult:
    """A finished (or failed) request with its story; renders as HTML in Jupyter."""

    result: GenerationResult | None
    timeline: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None  # the spec's API error shape when it failed

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def video_path(self) -> str | None:
        return self.result.video_path if self.result else None

    def _repr_html_(self) -> str:
        parts = ['<div class="kintsugi-result">']
        if self.result is not None:
            parts.append(_video_html(Path(self.result.video_path)))
            if self.result.degraded:
                parts.append(
                    '<p class="degraded"><b>Degraded result</b>: a lower-quality preview, not the video '
                    "you asked for.</p>"
                )
            request = self.result.request
            parts.append(
                f"<p><b>{request.num_frames} frames · {request.width}×{request.height} · {request.steps} "
                f"steps · seed {request.seed}</b> — {self.result.attempts} attempt(s)</p>"
            )
            changed = list(self.result.corrections) + list(self.result.changes)
            if changed:
                parts.append(
                    '<p><b>What we changed</b></p><ul class="changes">'
                    + "".join(f"<li>{html.escape(line)}</li>" for line in changed)
                    + "</ul>"
                )
            parts.extend(f"<p><i>{html.escape(note)}</i></p>" for note in self.result.notes)
        elif self.report is not None:
            error = self.report["error"]
            parts.append(f"<p><b>{html.escape(error['user_message'])}</b></p><p>{html.escape(error['message'])}</p>")
            parts.append(
                '<ul class="steps">'
                + "".join(f"<li>{html.escape(step)}</li>" for step in error["actionable_steps"])
                + "</ul>"
            )
        if self.timeline:
            parts.append(
                '<details open><summary>Timeline</summary><ol class="timeline">'
                + "".join(f"<li>{html.escape(line.lstrip('- '))}</li>" for line in self.timeline)
                + "</ol></details>"
            )
        parts.append("</div>")
        return "".join(parts)


def _video_html(path: Path) -> str:
    if path.stat().st_size <= _INLINE_LIMIT:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<video controls autoplay loop muted src="data:video/mp4;base64,{data}"></video>'
    return f'<p>Video: <a href="{html.escape(path.as_uri())}">{html.escape(path.name)}</a></p>'


class Studio:
    """A ``GenerationService`` with notebook manners: progress bars, rich results, inline app."""

    def __init__(self, settings: Settings | None = None, *, service: GenerationService | None = None) -> None:
        self.service = service or GenerationService(settings or Settings.from_env())
        self._started = False

    def generate(
        self, prompt: str, *, image: bytes | str | Path | None = None, progress: bool = True, **parameters: Any
    ) -> NotebookResult:
        """Generate with recovery; never raises for a failed request (the result shows what went wrong).

        ``image`` (image-to-video models): a file path or the file's bytes, checked and cut to the request's size
        like an upload in the app (the crop is listed with the corrections)."""
        from tqdm.auto import tqdm

        if not self._started:
            self.service.start()
            self._started = True
        timeline: list[str] = []
        bar = None
        try:
            request: Any = {"prompt": prompt, **parameters}
            corrections: list[str] = []
            if image is not None:
                request, corrections = attach_image(
                    GenerationRequest.from_dict({"model_id": self.service.settings.model, **request}),
                    image,
                    self.service.settings.uploads_dir,
                    limits=ImageLimits(max_bytes=self.service.settings.max_upload_bytes),
                )
            for event in self.service.generate(request, corrections=corrections):
                if event.kind is ServiceEventKind.PROGRESS and progress:
                    if bar is None or bar.total != event.data["total"] or event.data["step"] == 1:
                        if bar is not None:
                            bar.close()
                        bar = tqdm(total=event.data["total"], desc="Denoising", unit="step", leave=False)
                    bar.update(event.data["step"] - bar.n)
                elif event.kind is ServiceEventKind.RESULT:
                    return NotebookResult(event.data["result"], timeline)
                line = timeline_line(event)
                if line:
                    timeline.append(line)
        except GenerationFailedError as exc:
            return NotebookResult(None, timeline, exc.report)
        except InvalidParameterError as exc:  # the image was refused before the request was made
            return NotebookResult(None, timeline, self.service.reporter.failure(exc, None, {"prompt": prompt}).report)
        finally:
            if bar is not None:
                bar.close()
        return NotebookResult(None, timeline)

    def metrics(self) -> MetricsDashboard:
        """The metrics tab's figures and tables, from this studio's metrics store."""
        return dashboard(self.service.metrics)

    def close(self) -> None:
        self.service.close()
        self._started = False

    def __enter__(self) -> Studio:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connect(url: str):  # -> gradio_client.Client
    """A client for a running Kintsugi app (e.g. ``connect("http://127.0.0.1:7860/").predict(...)``)."""
    from gradio_client import Client

    return Client(url, verbose=False)
