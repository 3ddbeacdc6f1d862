"""Kintsugi web app: Gradio layout and event wiring only (also the Hugging Face Space entry point).

Every handler is a thin call into ``components``; see README.md for settings (``KINTSUGI_*``) and flags.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import gradio as gr
import pandas as pd
import uvicorn
from fastapi import FastAPI

from components import EMBEDDED_MODEL_ID, LIMITS, GenerationService, Settings
from components.chaos.faults import FAULT_COLUMNS, FaultInjection, FaultRun, producible_types
from components.chaos.scenarios import SCENARIOS, SPEC_DEMO, run_scenario
from components.generation.families import rules_for_model
from components.http_api import EventFeed, build_router
from components.store.disk import CleanupPlan
from components.views.charts import dashboard
from components.views.history import HistoryItem, history_markdown, history_page
from components.views.models import (
    CLEANUP_COLUMNS,
    ModelActions,
    cleanup_confirmation,
    model_choices,
    models_in_use,
    models_table,
    picker_model_ids,
)
from components.views.page import CSS, HEAD, PROMPT_COUNTER_JS, SCROLL_TO_RESULT_JS, SCROLL_TO_VIDEO_JS, prompt_counter
from components.views.presenters import failure_html, form_words, scenario_markdown, summary_markdown
from components.views.studio import (
    ASPECTS,
    CANCELLED_AT_NOTICE,
    FORM_FIELDS,
    PLAN_BUTTONS,
    SIZES,
    WRITTEN_BACK,
    StudioFrame,
    StudioRun,
    cancel_request,
    check_plan,
    fallback_default,
    form_image,
    form_request,
    form_values,
    image_field,
    image_note,
    preset_size,
)
from recovery import GenerationFailedError, InvalidParameterError, RequestCancelledError
from recovery.messages import format_bytes

try:  # present on Hugging Face Spaces; its GPU decorator is a no-op off ZeroGPU hardware
    import spaces
except ImportError:
    spaces = None

TITLE = "Kintsugi — video generation that mends itself"
INTRO = (
    "Text-to-video with diffusers' Wan pipeline. When something breaks (memory, a damaged model, the network), "
    "Kintsugi recovers by itself and tells you what it changed. The built-in model has **random weights: it makes "
    "coloured noise**, quickly, with no download. Real models such as `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` are "
    "chosen by hub id where a network and a GPU are available."
)

_service: GenerationService | None = None
feed = EventFeed()


def get_service() -> GenerationService:
    """The app's one service, created on first use from ``KINTSUGI_*`` settings."""
    global _service
    if _service is None:
        _service = GenerationService(Settings.from_env())
        _service.engine.bus.subscribe(feed)
    return _service


def untouched_upload(image: gr.Image) -> gr.Image:
    """``image`` (an input of ``type="filepath"``) handing its upload to the handler untouched, as a file path:
    ``components.generation.images`` checks it (format by content, size, decompression bombs) and says what is
    wrong, so gradio must not open it first (its own decoding fails with a bare error). Set on the instance: a
    ``gr.Image`` subclass would make gradio write an ``app.pyi`` stub beside this file at every import."""
    original = image.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is not None and payload.path is not None and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return original(payload)

    image.preprocess = preprocess  # type: ignore[method-assign]
    return image


def _prepared(values: dict[str, Any], image: str | None) -> tuple[dict[str, Any], list[str], list[str]]:
    """The form's request (its start image prepared), the page's corrections and the image's."""
    service = get_service()
    request, page_corrections = form_request(values)
    request, image_corrections = form_image(
        request,
        image,
        default_model=service.settings.model,
        uploads_dir=service.settings.uploads_dir,
        max_bytes=service.settings.max_upload_bytes,
    )
    return request, page_corrections, image_corrections


def _studio_run(
    values: dict[str, Any], plan_choice: str | None = None, image: str | None = None
) -> Iterator[tuple[str, StudioFrame, str | None]]:
    """One request from the form (and its start ``image``, a path), as frames with the prepared image; toasts on
    the way; a stop (Stop, Esc, a closed tab, a client's cancel) reaches the service as a cancel of this request.
    ``plan_choice``: the answer to the plan notice (``None``: automatic planning)."""
    service = get_service()
    correlation_id = uuid.uuid4().hex[:12]
    try:
        request, page_corrections, image_corrections = _prepared(values, image)
    except InvalidParameterError as exc:  # journaled as refused, reported as any refused request
        request, page_corrections, image_corrections = {}, [], []
        refusal: GenerationFailedError | None = service.refuse(exc, correlation_id)
    else:
        refusal = None
    prepared = request.get("image")

    def checked() -> dict[str, Any] | None:
        entry = service.request_status(correlation_id)
        return dict(entry.request) if entry is not None and entry.request else None

    run = StudioRun(correlation_id, checked, tuple(page_corrections))
    try:
        if refusal is not None:
            raise refusal
        stream = service.generate(
            request, correlation_id=correlation_id, plan_choice=plan_choice, corrections=image_corrections
        )
        for frame in run.frames(stream):
            for notice in frame.notices:
                (gr.Warning if notice.level == "warning" else gr.Info)(notice.text, title=notice.title)
            yield correlation_id, frame, prepared
    except GeneratorExit:  # gradio closes the generator when the job is cancelled or its client went away
        cancel_request(service, correlation_id)
        raise
    except RequestCancelledError as exc:  # stopped from elsewhere (e.g. DELETE /api/v1/requests/{id}): not a failure
        yield correlation_id, run.failed(exc.report), prepared
    except GenerationFailedError as exc:
        yield correlation_id, run.failed(exc.report), prepared
        raise gr.Error(failure_html(exc.report), title="Generation failed", print_exception=False) from None


def generate(
    prompt: str,
    negative_prompt: str,
    model_id: str,
    width: float,
    height: float,
    num_frames: float,
    steps: float,
    guidance_scale: float,
    seed: float,
    fps: float,
    allow_fallback: bool | None = None,
    image: str | None = None,
) -> Iterator[tuple[str | None, str]]:
    """Make a video. Streams the timeline (Markdown) while it runs; ends with the mp4 and the result panel.

    ``seed`` below 0 draws a random seed (the result says which); ``allow_fallback`` lets recovery use another
    model when this one fails (left out: only for the default model). ``image``: the start image of an
    image-to-video model (PNG, JPEG or WebP; cropped and resized to width×height, reported), refused by a
    text-to-video model. Memory planning is automatic here (no plan notice to answer: a request predicted not to
    fit is planned down and the result says so). Cancelling the job (or disconnecting) stops the generation."""
    values = dict(locals())  # the parameters, by name (FORM_FIELDS, then the image)
    image = values.pop("image")
    for _correlation_id, frame, _prepared_image in _studio_run(values, None, image):
        yield frame.video, frame.status


#: ``generate_in_page``'s first argument from the Generate button: ask first when memory planning would change it.
ASK = "ask"


def generate_in_page(plan_choice: str | None, *args: Any) -> Iterator[tuple[Any, ...]]:
    """The page's Generate: the video, the status, the progress panel, this request's id, the form's numbers
    written back with what really ran, and the plan notice (its box, its message, a button per choice).

    ``plan_choice`` ``ASK`` (the Generate button): a request memory planning would lower shows the notice and
    nothing starts; a notice button passes its choice and the request runs so."""
    *fields, image = args
    values = dict(zip(FORM_FIELDS, fields, strict=True))
    untouched = (gr.skip(),) * (1 + len(WRITTEN_BACK))
    if plan_choice == ASK:
        prompt = check_plan(get_service(), values, image)
        if prompt is not None:
            buttons = (
                gr.Button(value=label or words, visible=label is not None)
                for words, label in zip(PLAN_BUTTONS.values(), prompt.buttons.values(), strict=True)
            )
            yield (gr.skip(), "", "", *untouched, gr.Group(visible=True), prompt.message, *buttons, gr.skip())
            return
        plan_choice = None
    hidden = (gr.Group(visible=False), gr.skip(), *(gr.skip() for _ in PLAN_BUTTONS))
    shown = False
    for correlation_id, frame, prepared in _studio_run(values, plan_choice, image):
        form = frame.form or {}
        used = gr.skip() if shown else gr.Image(value=prepared, visible=prepared is not None)
        shown = True
        yield (
            frame.video if frame.done else gr.skip(),
            frame.status,
            frame.progress,
            correlation_id,
            *(form[name] if name in form else gr.skip() for name in WRITTEN_BACK),
            *hidden,
            used,
        )


def page_generation(plan_choice: str) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The handler of a button that generates: Generate (``ASK``) or one of the plan notice's choices."""

    def run(*args: Any) -> Iterator[tuple[Any, ...]]:
        yield from generate_in_page(plan_choice, *args)

    return run


if spaces is not None:
    generate = spaces.GPU(generate)
    generate_in_page = spaces.GPU(generate_in_page)


def image_for_model(model_id: str | None) -> Any:
    """The start image's field as the chosen model needs it: hidden and emptied for a text-to-video model (an
    image there would be refused), marked required for an image-to-video one."""
    shown = image_field(model_id)
    if not shown.visible:
        return gr.Image(value=None, visible=False, label=shown.label)
    return gr.Image(visible=True, label=shown.label)


def image_preview(image: str | None, model_id: str, width: float, height: float) -> tuple[Any, str]:
    """Right after an upload: the image as it will be used (cropped and resized to the form's size) and what was
    changed, or why it cannot be used."""
    if not image:
        return gr.Image(value=None, visible=False), ""
    try:
        request, _page, corrections = _prepared(
            {"prompt": "preview", "model_id": model_id, "width": width, "height": height}, image
        )
    except InvalidParameterError as exc:
        return gr.Image(value=None, visible=False), f"**This image cannot be used:** {form_words(str(exc))}"
    return gr.Image(value=request["image"], visible=True), image_note(corrections)


def stop(correlation_id: str | None) -> Any:
    """Stop button and Esc: the service stops this page's request at its next step (gradio also cancels the job)."""
    if correlation_id and cancel_request(get_service(), correlation_id):
        return "<p class='phase-eta'>Stopped. The generator is free for the next request.</p>"
    return gr.skip()


def save_settings(*args: Any) -> dict[str, Any]:
    """The form as it stands after a run, kept in this browser (``gr.BrowserState``)."""
    return form_values(dict(zip(FORM_FIELDS, args, strict=True)), FORM_FIELDS)


def restore_settings(saved: dict[str, Any] | None) -> tuple[Any, ...]:
    """The last settings this browser ran, back in the form after a reload."""
    values = form_values(saved or {}, FORM_FIELDS)
    return tuple(values[name] if name in values else gr.skip() for name in FORM_FIELDS)


def apply_preset(aspect: str | None, size: str | None, model_id: str | None = None) -> tuple[Any, Any]:
    if not aspect or not size:
        return gr.skip(), gr.skip()
    return preset_size(aspect, size, side_multiple=rules_for_model(model_id or "").side_multiple)


def history_view(page: int) -> tuple[Any, str, list[HistoryItem], int]:
    """One page of past videos, newest first: the gallery, its caption, the items and the page shown."""
    service = get_service()
    found = history_page(service.settings.outputs_dir, service.journal, page=page)
    return [(item.video_path, item.caption()) for item in found.items], found.label(), list(found.items), found.page


def history_select(items: list[HistoryItem], evt: gr.SelectData) -> tuple[str, HistoryItem | None, Any]:
    item = items[evt.index] if isinstance(evt.index, int) and 0 <= evt.index < len(items) else None
    return (
        history_markdown(item),
        item,
        gr.DownloadButton(value=item.video_path, visible=True) if item else gr.DownloadButton(visible=False),
    )


def reuse_settings(item: HistoryItem | None) -> tuple[Any, ...]:
    """A past video's prompt and settings, back in the form, and the Generate tab shown."""
    values = form_values(item.request or {}, FORM_FIELDS) if item else {}
    fields = tuple(values[name] if name in values else gr.skip() for name in FORM_FIELDS)
    return (*fields, gr.Tabs(selected="generate") if values else gr.skip())


def reuse_seed(item: HistoryItem | None) -> tuple[Any, Any]:
    seed = (item.request or {}).get("seed") if item else None
    return (seed, gr.Tabs(selected="generate")) if seed is not None else (gr.skip(), gr.skip())


def actions() -> ModelActions:
    service = get_service()
    return ModelActions(
        service.store,
        data_dir=str(service.settings.data_dir),
        default_model=service.settings.model,
        in_use=lambda: models_in_use(service.journal),
    )


def model_action(method: str) -> Callable[[str], str]:
    """A handler that runs one ``ModelActions`` method on the chosen model."""

    def run(model_id: str) -> str:
        return getattr(actions(), method)(model_id)

    return run


def download(model_id: str) -> Iterator[str]:
    """Stream download progress lines into the report."""
    yield from actions().download(model_id)


def model_picker() -> gr.Dropdown:
    """The generate tab's model list, each entry with its status in the local cache."""
    return gr.Dropdown(choices=model_choices(get_service().store))


def model_table() -> pd.DataFrame:
    return models_table(get_service().store)


def cleanup_preview(gigabytes: float) -> tuple[pd.DataFrame, CleanupPlan, str, Any]:
    """What a clean-up would delete (never the default model nor one in use), and what it would free."""
    models = actions()
    table, plan = models.cleanup_preview(gigabytes or 0.0)
    return table, plan, models.cleanup_note(plan), gr.Group(visible=False)


def cleanup_ask(plan: CleanupPlan | None) -> tuple[str, Any, Any]:
    """Ask before deleting: the question with the bytes freed, and the button that confirms it."""
    if plan is None or not plan.items:
        return cleanup_confirmation(plan), gr.Group(visible=False), gr.skip()
    return (
        cleanup_confirmation(plan),
        gr.Group(visible=True),
        gr.Button(f"Yes, delete and free {format_bytes(plan.bytes_freed)}"),
    )


def cleanup_apply(plan: CleanupPlan | None) -> tuple[str, Any, None, pd.DataFrame]:
    """Delete what was previewed and confirmed; the preview is spent (a new clean-up previews again)."""
    return actions().apply_cleanup(plan), gr.Group(visible=False), None, pd.DataFrame(columns=CLEANUP_COLUMNS)


def scenario_view(name: str) -> Callable[[], tuple[pd.DataFrame, str | None, str]]:
    """A handler that runs one of the spec's scenarios for real (its own fault, scratch hub and workers),
    recording into this app's metrics; it returns the summary row, the video (if any) and the story."""

    def run() -> tuple[pd.DataFrame, str | None, str]:
        settings = get_service().settings
        report = run_scenario(name, workdir=settings.data_dir / "scenarios", data_dir=settings.data_dir)
        return pd.DataFrame([report.as_row()]), report.video_path, scenario_markdown(report)

    return run


def chaos_panel() -> tuple[str, gr.Row, gr.Dataframe]:
    """The fault-injection section as the settings allow: its controls with KINTSUGI_CHAOS=on, else how to turn
    it on (read at page load, so the ``--chaos`` flag counts too)."""
    faults = FaultInjection(get_service().settings)
    return faults.note(), gr.Row(visible=faults.settings.chaos), gr.Dataframe(visible=faults.settings.chaos)


def _fault_runs(start: Callable[[FaultInjection], Iterator[FaultRun]]) -> Iterator[tuple[pd.DataFrame, str]]:
    """Run faults for real into this app's metrics — the table and the story after each fault, so a long run shows
    its rows as they come; refused (in words) unless KINTSUGI_CHAOS=on."""
    try:
        runs = start(FaultInjection(get_service().settings))
    except InvalidParameterError as exc:
        raise gr.Error(str(exc), title="Fault injection", print_exception=False) from None
    for run in runs:
        yield run.table(), run.story()


def chaos_inject(failure_type: str) -> Iterator[tuple[pd.DataFrame, str]]:
    """Inject the chosen failure type; its row and its story."""
    yield from _fault_runs(lambda faults: iter([faults.inject(failure_type)]))


def chaos_matrix() -> Iterator[tuple[pd.DataFrame, str]]:
    """Inject the failure types drawn at the settings' rate; a row each, as each ends, and the story of the last."""
    yield from _fault_runs(lambda faults: faults.inject_at_rate())


def metrics_view() -> tuple:
    """Headline, the six charts and the latest recovery attempts, from the metrics store."""
    board = dashboard(get_service().metrics)
    return (summary_markdown(board.summary), *board.figures().values(), board.recent_events)


def build_app() -> gr.Blocks:
    """Tabs: Generate (parameters left, progress, video and what happened right), History (past videos), Models,
    Scenarios (the six, and fault injection when switched on), Metrics. Endpoints the page uses internally are
    private: ``view_api`` lists only the documented ones."""
    model_ids = picker_model_ids()
    default_image = image_field(Settings.from_env().model)
    private: dict[str, Any] = {"api_visibility": "private"}
    with gr.Blocks(title="Kintsugi") as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        saved = gr.BrowserState({}, storage_key="kintsugi-last-settings")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate") as generate_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        prompt = gr.Textbox(
                            label="Prompt", value="a paper boat drifting on a golden river", lines=2, elem_id="prompt"
                        )
                        counter = gr.Markdown(
                            prompt_counter("a paper boat drifting on a golden river"), elem_id="prompt-counter"
                        )
                        with gr.Row():
                            button = gr.Button("Generate", variant="primary", scale=3, elem_id="generate-button")
                            stop_button = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-button")
                        gr.Markdown("<small>Ctrl+Enter generates · Esc stops</small>")
                        negative = gr.Textbox(label="Negative prompt", value="")
                        with gr.Row():
                            model = gr.Dropdown(
                                label="Model",
                                choices=model_ids,
                                value=Settings.from_env().model,
                                allow_custom_value=True,
                                info="Hub models download on first use",
                                scale=3,
                                elem_id="model-picker",
                            )
                            # ticked for the default model the dropdown starts on; unticked when another is chosen
                            allow_fallback = gr.Checkbox(
                                label="Allow another model",
                                value=True,
                                info="if this one fails here; the result names both",
                                scale=2,
                                elem_id="allow-fallback",
                            )
                        with gr.Row():
                            image_input = untouched_upload(
                                gr.Image(
                                    label=default_image.label,
                                    type="filepath",
                                    sources=["upload", "clipboard"],
                                    visible=default_image.visible,
                                    height=200,
                                    scale=1,
                                    elem_id="start-image",
                                )
                            )
                            image_used = gr.Image(
                                label="Image used (at the video's size)",
                                interactive=False,
                                visible=False,
                                height=200,
                                scale=1,
                                elem_id="image-used",
                            )
                        image_note = gr.Markdown(elem_id="image-note")
                        with gr.Row():
                            aspect = gr.Radio(list(ASPECTS), label="Aspect ratio", value=None, scale=3)
                            size = gr.Radio(list(SIZES), label="Size", value="Small (256)", scale=3)
                        with gr.Row():
                            width = gr.Slider(
                                LIMITS.min_side, LIMITS.max_side, value=256, step=LIMITS.side_multiple, label="Width"
                            )
                            height = gr.Slider(
                                LIMITS.min_side, LIMITS.max_side, value=256, step=LIMITS.side_multiple, label="Height"
                            )
                        with gr.Row():
                            frames = gr.Slider(
                                LIMITS.min_frames,
                                LIMITS.max_frames,
                                value=17,
                                step=LIMITS.frame_multiple,
                                label="Frames (4k+1)",
                            )
                            # from 0, so that a 0 reaches the page's correction instead of the browser's silent clamp
                            steps = gr.Slider(0, LIMITS.max_steps, value=4, step=1, label="Steps")
                        with gr.Row():
                            guidance = gr.Slider(0, LIMITS.max_guidance, value=5.0, step=0.5, label="Guidance scale")
                            fps = gr.Slider(LIMITS.min_fps, LIMITS.max_fps, value=8, step=1, label="Frames per second")
                        with gr.Row():
                            seed = gr.Number(label="Seed (-1 = random)", value=0, precision=0, scale=3)
                            random_seed = gr.Button("Random seed", scale=1, size="sm")
                    with gr.Column(scale=1, elem_id="result-column"):
                        with gr.Group(visible=False, elem_id="plan-notice") as notice_box:
                            notice_message = gr.Markdown(elem_id="plan-notice-message")
                            with gr.Row():
                                notice_buttons = {
                                    choice: gr.Button(
                                        words,
                                        variant="stop" if choice == "cancel" else "secondary",
                                        size="sm",
                                        elem_id=f"plan-{choice.replace('_', '-')}",
                                    )
                                    for choice, words in PLAN_BUTTONS.items()
                                }
                        progress = gr.HTML(elem_id="progress-panel")
                        video = gr.Video(
                            label="Video", autoplay=True, loop=True, interactive=False, elem_id="result-video"
                        )
                        status = gr.Markdown(elem_id="status")
                correlation = gr.State(None)
                api_trigger = gr.Button(visible=False)
                # The API's allow_fallback: left out, it is None and the service decides (another model only for
                # the default model). A checkbox turns an initial None into False, hence the value set after.
                api_allow_fallback = gr.Checkbox(visible=False)
                api_allow_fallback.value = None
            with gr.Tab("History", id="history") as history_tab:
                history_note = gr.Markdown(elem_id="history-note")
                gallery = gr.Gallery(
                    label="Your videos, newest first", columns=4, height="auto", elem_id="history-gallery"
                )
                with gr.Row():
                    newer = gr.Button("← Newer")
                    older = gr.Button("Older →")
                details = gr.Markdown(elem_id="history-details")
                with gr.Row():
                    reuse_all = gr.Button("Reuse settings", elem_id="reuse-settings")
                    reuse_one = gr.Button("Reuse seed", elem_id="reuse-seed")
                    download_video = gr.DownloadButton("Download", visible=False, elem_id="download-video")
                history_items = gr.State([])
                history_shown = gr.State(0)
                chosen_item = gr.State(None)
                first_page = gr.State(0)
            form = [prompt, negative, model, width, height, frames, steps, guidance, seed, fps, allow_fallback]
            written_back = [dict(zip(FORM_FIELDS, form, strict=True))[name] for name in WRITTEN_BACK]
            history_outputs = [gallery, history_note, history_items, history_shown]
            page_outputs = [
                video,
                status,
                progress,
                correlation,
                *written_back,
                notice_box,
                notice_message,
                *notice_buttons.values(),
                image_used,
            ]
            generations = []
            for trigger, choice in (
                (button, ASK),
                (notice_buttons["fewer_frames"], "fewer_frames"),
                (notice_buttons["lower_resolution"], "lower_resolution"),
                (notice_buttons["run_anyway"], "run_anyway"),
            ):
                generation = trigger.click(
                    lambda: ("<p class='phase-eta'>Waiting for the generator…</p>", gr.Group(visible=False)),
                    None,
                    [progress, notice_box],
                    js=SCROLL_TO_RESULT_JS,
                    queue=False,
                    show_progress="hidden",
                    **private,
                ).then(
                    page_generation(choice),
                    [*form, image_input],
                    page_outputs,
                    concurrency_limit=get_service().capacity,  # one per Ray replica; one locally
                    concurrency_id="generate",
                    show_progress="hidden",
                    **private,
                )
                generation.then(save_settings, form, saved, show_progress="hidden", **private).then(
                    None, js=SCROLL_TO_VIDEO_JS, **private
                ).then(history_view, first_page, history_outputs, show_progress="hidden", **private)
                generations.append(generation)
            notice_buttons["cancel"].click(
                lambda: (gr.Group(visible=False), f"_{CANCELLED_AT_NOTICE}_", ""),
                None,
                [notice_box, status, progress],
                queue=False,
                show_progress="hidden",
                **private,
            )
            stop_button.click(stop, correlation, progress, cancels=generations, show_progress="hidden", **private)
            model.input(
                lambda model_id: fallback_default(model_id, get_service().settings.model),
                model,
                allow_fallback,
                queue=False,
                show_progress="hidden",
                **private,
            )
            model.change(image_for_model, model, image_input, queue=False, show_progress="hidden", **private)
            preview: dict[str, Any] = dict(
                fn=image_preview,
                inputs=[image_input, model, width, height],
                outputs=[image_used, image_note],
                show_progress="hidden",
                **private,
            )
            image_input.upload(**preview)
            image_input.clear(
                lambda: (gr.Image(value=None, visible=False), ""),
                None,
                [image_used, image_note],
                queue=False,
                **private,
            )
            api_trigger.click(
                generate,
                [*form[:-1], api_allow_fallback, image_input],
                [video, status],
                api_name="generate",
                api_description=(
                    "Make a video: streams the timeline while it runs and ends with the mp4 and the result panel. "
                    "seed < 0 draws a random seed; allow_fallback left out allows another model only for the "
                    "default model; a request predicted not to fit in memory is planned down automatically (the "
                    "result says what changed); cancelling the job stops the generation. image: the start image "
                    "of an image-to-video model (PNG, JPEG or WebP, cropped and resized to width×height, "
                    "reported); a text-to-video model refuses one."
                ),
                concurrency_limit=get_service().capacity,
                concurrency_id="generate",
                show_progress="hidden",
            )
            # on every change, typed or set (reuse settings, restored settings)
            prompt.change(None, prompt, counter, js=PROMPT_COUNTER_JS, show_progress="hidden", **private)
            random_seed.click(lambda: -1, None, seed, queue=False, **private)
            for preset in (aspect, size):
                preset.input(apply_preset, [aspect, size, model], [width, height], queue=False, **private).then(
                    **preview
                )
            for side in (width, height):  # the image is shown cut to the size the request will run at
                side.release(**preview)
            history_tab.select(history_view, history_shown, history_outputs, **private)
            newer.click(lambda page: history_view(page - 1), history_shown, history_outputs, **private)
            older.click(lambda page: history_view(page + 1), history_shown, history_outputs, **private)
            gallery.select(history_select, history_items, [details, chosen_item, download_video], **private)
            reuse_all.click(reuse_settings, chosen_item, [*form, tabs], **private)
            reuse_one.click(reuse_seed, chosen_item, [seed, tabs], **private)
            demo.load(restore_settings, saved, form, **private)
            with gr.Tab("Models") as models_tab:
                table = gr.Dataframe(label="Known models", interactive=False, wrap=True, elem_id="model-table")
                with gr.Row():
                    chosen = gr.Dropdown(
                        label="Model", choices=model_ids, value=EMBEDDED_MODEL_ID, allow_custom_value=True, scale=3
                    )
                    refresh = gr.Button("Refresh", scale=1)
                with gr.Row():
                    buttons = {
                        name: gr.Button(name)
                        for name in ("Quick check", "Full check", "Repair", "Download", "Update", "Roll back")
                    }
                report = gr.Markdown(elem_id="model-report")
                with gr.Accordion("Disk clean-up", open=False):
                    gr.Markdown(
                        "Never offered: the default model (`KINTSUGI_MODEL`) and models a request is using. "
                        "Nothing is deleted before you confirm."
                    )
                    gigabytes = gr.Number(label="Space to free (GB)", value=10, minimum=0)
                    preview = gr.Button("Preview what would be deleted", elem_id="cleanup-preview")
                    cleanup_note = gr.Markdown(elem_id="cleanup-note")
                    plan_table = gr.Dataframe(
                        label="Would be deleted",
                        interactive=False,
                        headers=CLEANUP_COLUMNS,
                        elem_id="cleanup-table",
                        wrap=True,
                    )
                    plan = gr.State(None)
                    ask = gr.Button("Delete the previewed items…", variant="stop", elem_id="cleanup-delete")
                    with gr.Group(visible=False) as confirm_box:
                        question = gr.Markdown(elem_id="cleanup-question")
                        with gr.Row():
                            confirm = gr.Button("Yes, delete", variant="stop", elem_id="cleanup-yes")
                            dismiss = gr.Button("Cancel", elem_id="cleanup-cancel")
            refresh.click(model_table, None, table, api_name="models", api_description="The Models tab's table.")
            for name, method in (
                ("Quick check", "quick_check"),
                ("Full check", "full_check"),
                ("Repair", "repair"),
                ("Download", "download"),
                ("Update", "update"),
                ("Roll back", "rollback"),
            ):
                handler = download if method == "download" else model_action(method)
                buttons[name].click(handler, chosen, report, api_name=f"model_{method}").then(
                    model_table, None, table, **private
                ).then(model_picker, None, model, **private)
            preview.click(cleanup_preview, gigabytes, [plan_table, plan, cleanup_note, confirm_box], **private)
            ask.click(cleanup_ask, plan, [question, confirm_box, confirm], **private)
            dismiss.click(lambda: gr.Group(visible=False), None, confirm_box, **private)
            confirm.click(cleanup_apply, plan, [report, confirm_box, plan, plan_table], **private).then(
                model_table, None, table, **private
            ).then(model_picker, None, model, **private)
            with gr.Tab("Scenarios") as scenarios_tab:
                gr.Markdown(
                    "Each button runs one of the spec's six scenarios **for real**: the fault is injected (a "
                    "flaky loopback hub, a worker memory cap, a truncated weight file, an unreachable hub, bad "
                    "parameters, a gated repo) and the same service recovers. Runs show in the Metrics tab."
                )
                with gr.Row():
                    scenario_buttons = {name: gr.Button(SPEC_DEMO[name][0]) for name in SCENARIOS}
                scenario_row = gr.Dataframe(
                    label="Outcome",
                    interactive=False,
                    wrap=True,
                    headers=[
                        "scenario",
                        "failure type",
                        "strategies tried",
                        "recovered?",
                        "time (s)",
                        "what the user was told",
                    ],
                )
                with gr.Row():
                    scenario_video = gr.Video(label="Video", interactive=False, scale=1)
                    scenario_story = gr.Markdown(elem_id="scenario-story")
                gr.Markdown("### Fault injection")
                chaos_note = gr.Markdown(elem_id="chaos-note")
                types = producible_types()
                with gr.Row(visible=False) as chaos_controls:
                    fault_type = gr.Dropdown(
                        label="Failure type", choices=list(types), value=types[0] if types else None, scale=3
                    )
                    inject = gr.Button("Inject this fault", scale=1)
                    inject_at_rate = gr.Button("Inject at rate", scale=1)
                fault_table = gr.Dataframe(
                    label="Faults injected",
                    headers=list(FAULT_COLUMNS),
                    interactive=False,
                    wrap=True,
                    visible=False,
                    elem_id="fault-table",
                )
                fault_story = gr.Markdown(elem_id="fault-story")
            for name, scenario_button in scenario_buttons.items():
                scenario_button.click(
                    scenario_view(name),
                    None,
                    [scenario_row, scenario_video, scenario_story],
                    api_name=f"scenario_{name}",
                    concurrency_limit=1,
                    concurrency_id="scenarios",
                )
            inject.click(
                chaos_inject,
                fault_type,
                [fault_table, fault_story],
                api_name="chaos_inject",
                concurrency_limit=1,
                concurrency_id="scenarios",
            )
            inject_at_rate.click(
                chaos_matrix,
                None,
                [fault_table, fault_story],
                api_name="chaos_matrix",
                concurrency_limit=1,
                concurrency_id="scenarios",
            )
            with gr.Tab("Metrics") as metrics_tab:
                headline = gr.Markdown(elem_id="metrics-summary")
                plots = []
                for pair in (
                    ("runs_over_time", "success_rate"),
                    ("failures_over_time", "recovery_time"),
                    ("oom_rescue", "effectiveness"),
                ):
                    with gr.Row():
                        plots.extend(gr.Plot(elem_id=f"chart-{name}", show_label=False) for name in pair)
                recent = gr.Dataframe(label="Latest recovery attempts", interactive=False, wrap=True)
                refresh_metrics = gr.Button("Refresh")
                ticker = gr.Timer(15, active=False)  # runs only while the tab is shown (below)
            metrics_outputs = [headline, *plots, recent]
            refresh_metrics.click(
                metrics_view, None, metrics_outputs, api_name="metrics", api_description="The Metrics tab's figures."
            )
            ticker.tick(metrics_view, None, metrics_outputs, show_progress="hidden", **private)
            # A hidden tab's timer would query the metrics store every 15 s for nobody, in every open tab.
            metrics_tab.select(lambda: gr.Timer(active=True), None, ticker, **private).then(
                metrics_view, None, metrics_outputs, show_progress="hidden", **private
            )
            for other in (generate_tab, history_tab, models_tab, scenarios_tab):
                other.select(lambda: gr.Timer(active=False), None, ticker, **private)
            demo.load(model_table, None, table, **private).then(model_picker, None, model, **private).then(
                metrics_view, None, metrics_outputs, **private
            )
            demo.load(chaos_panel, None, [chaos_note, chaos_controls, fault_table], **private)
    return demo


demo = build_app()


def build_server() -> FastAPI:
    """One server: the REST API and event feed under ``/api/v1``, the Gradio page at ``/``."""
    server = FastAPI(title="Kintsugi", docs_url="/api/v1/docs", openapi_url="/api/v1/openapi.json")
    server.include_router(build_router(get_service, feed))
    demo.queue(max_size=get_service().settings.queue_size)
    return gr.mount_gradio_app(
        server,
        demo,
        path="/",
        # the videos, and the prepared start images the page shows back (the data folder may be anywhere)
        allowed_paths=[str(get_service().settings.outputs_dir), str(get_service().settings.uploads_dir)],
        show_error=False,
        css=CSS,
        head=HEAD,
    )


def main(argv: list[str] | None = None) -> None:
    """``python app.py [--data-dir DIR] [--worker-memory-cap 2GiB] ...``: start the worker, then serve."""
    parser = argparse.ArgumentParser(description="Kintsugi web app")
    parser.add_argument("--data-dir", help="where models, videos and metrics live (KINTSUGI_DATA_DIR)")
    parser.add_argument(
        "--worker-memory-cap", help="memory cap of the generation worker, e.g. 2GiB (KINTSUGI_WORKER_MEMORY_CAP)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="KINTSUGI_DEVICE")
    parser.add_argument(
        "--chaos", choices=["on", "off"], help="fault injection from the Scenarios tab (KINTSUGI_CHAOS)"
    )
    parser.add_argument(
        "--chaos-rate", help="share of failure types drawn by 'Inject at rate', 0..1 (KINTSUGI_CHAOS_RATE)"
    )
    args = parser.parse_args(argv)
    for flag, variable in (
        ("data_dir", "KINTSUGI_DATA_DIR"),
        ("worker_memory_cap", "KINTSUGI_WORKER_MEMORY_CAP"),
        ("device", "KINTSUGI_DEVICE"),
        ("chaos", "KINTSUGI_CHAOS"),
        ("chaos_rate", "KINTSUGI_CHAOS_RATE"),
    ):
        if getattr(args, flag):
            os.environ[variable] = getattr(args, flag)
    get_service().start()
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    print(f"Kintsugi on http://{host}:{port}/", flush=True)
    # On SIGTERM (a Space restart, Ctrl-C) open streams — a browser's or a gradio_client's event stream — get a few
    # seconds to end, then the server stops anyway instead of waiting for them forever.
    uvicorn.run(build_server(), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
