"""Kintsugi web app: Gradio layout and event wiring only (also the Hugging Face Space entry point).

Every handler is a thin call into ``components``; see README.md for settings (``KINTSUGI_*``) and flags.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator

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
from components.http_api import EventFeed, build_router
from components.store.catalog import CATALOG
from components.store.disk import CleanupPlan
from components.views.charts import dashboard
from components.views.models import ModelActions, model_choices, models_table
from components.views.presenters import (
    failure_markdown,
    result_markdown,
    scenario_markdown,
    summary_markdown,
    timeline_line,
)
from components.views.reports import ServiceEventKind as Kind
from recovery import GenerationFailedError, InvalidParameterError, events

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
    progress: gr.Progress = gr.Progress(),
) -> Iterator[tuple[str | None, str]]:
    """Stream the timeline while the video is made; end with the video and the result panel."""
    request = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "model_id": model_id,
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "seed": None if seed is None or seed < 0 else seed,
        "fps": fps,
    }
    timeline: list[str] = []
    try:
        for event in get_service().generate(request):
            if event.kind is Kind.PROGRESS:
                progress((event.data["step"], event.data["total"]), desc="Denoising", unit="steps")
            elif event.kind is Kind.DOWNLOAD and event.data["bytes_total"]:
                progress(
                    event.data["bytes_done"] / event.data["bytes_total"], desc=f"Downloading {event.data['model_id']}"
                )
            elif event.kind is Kind.RESULT:
                result = event.data["result"]
                yield result.video_path, result_markdown(result) + "\n\n---\n" + "\n".join(timeline)
                return
            elif event.kind is Kind.RECOVERY and event.message == events.FAILURE_CLASSIFIED:
                gr.Warning(
                    f"Attempt {event.data['attempt']} failed ({event.data['failure_type']}): recovering",
                    title="Recovering",
                )
            elif event.kind is Kind.RECOVERY and event.message == events.RECOVERED:
                gr.Info(f"Recovered after {event.data['attempts']} attempts", title="Recovered")
            line = timeline_line(event)
            if line:
                timeline.append(line)
                yield None, "\n".join(timeline)
    except GenerationFailedError as exc:
        raise gr.Error(failure_markdown(exc.report), title="Generation failed", print_exception=False) from None


if spaces is not None:
    generate = spaces.GPU(generate)


def actions() -> ModelActions:
    service = get_service()
    return ModelActions(service.store, data_dir=str(service.settings.data_dir))


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


def cleanup_preview(gigabytes: float) -> tuple[pd.DataFrame, CleanupPlan]:
    return actions().cleanup_preview(gigabytes or 0.0)


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


def chaos_inject(name: str) -> Iterator[tuple[pd.DataFrame, str]]:
    """Inject the chosen failure type; its row and its story."""
    yield from _fault_runs(lambda faults: iter([faults.inject(name)]))


def chaos_matrix() -> Iterator[tuple[pd.DataFrame, str]]:
    """Inject the failure types drawn at the settings' rate; a row each, as each ends, and the story of the last."""
    yield from _fault_runs(lambda faults: faults.inject_at_rate())


def metrics_view() -> tuple:
    """Headline, the six charts and the latest recovery attempts, from the metrics store."""
    board = dashboard(get_service().metrics)
    return (summary_markdown(board.summary), *board.figures().values(), board.recent_events)


def build_app() -> gr.Blocks:
    """Tabs: Generate (parameters left, video and what happened right), Models, Scenarios (the six, and fault
    injection when switched on), Metrics."""
    model_ids = [entry.model_id for entry in CATALOG]
    with gr.Blocks(title="Kintsugi") as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    prompt = gr.Textbox(
                        label="Prompt",
                        value="a paper boat drifting on a golden river",
                        lines=2,
                        max_length=LIMITS.max_prompt_chars,
                    )
                    negative = gr.Textbox(label="Negative prompt", value="", max_length=LIMITS.max_prompt_chars)
                    model = gr.Dropdown(
                        label="Model",
                        choices=model_ids,
                        value=Settings.from_env().model,
                        allow_custom_value=True,
                        info="Hub models download on first use",
                    )
                    with gr.Row():
                        width = gr.Slider(LIMITS.min_side, LIMITS.max_side, value=256, step=16, label="Width")
                        height = gr.Slider(LIMITS.min_side, LIMITS.max_side, value=256, step=16, label="Height")
                    with gr.Row():
                        frames = gr.Slider(1, LIMITS.max_frames, value=17, step=4, label="Frames (4k+1)")
                        steps = gr.Slider(LIMITS.min_steps, 50, value=4, step=1, label="Steps")
                    with gr.Row():
                        guidance = gr.Slider(0, LIMITS.max_guidance, value=5.0, step=0.5, label="Guidance scale")
                        fps = gr.Slider(LIMITS.min_fps, 30, value=8, step=1, label="Frames per second")
                    seed = gr.Number(label="Seed (-1 = random)", value=0, precision=0)
                    button = gr.Button("Generate", variant="primary")
                with gr.Column(scale=1):
                    video = gr.Video(label="Video", autoplay=True, loop=True, interactive=False)
                    status = gr.Markdown(elem_id="status")
            button.click(
                generate,
                [prompt, negative, model, width, height, frames, steps, guidance, seed, fps],
                [video, status],
                api_name="generate",
                concurrency_limit=1,
            )
        with gr.Tab("Models"):
            table = gr.Dataframe(label="Known models", interactive=False, wrap=True)
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
                gigabytes = gr.Number(label="Space to free (GB)", value=10, minimum=0)
                preview = gr.Button("Preview what would be deleted")
                plan_table = gr.Dataframe(label="Would be deleted", interactive=False)
                plan = gr.State(None)
                apply = gr.Button("Delete the previewed revisions", variant="stop")
        refresh.click(model_table, None, table, api_name="models")
        for name, method in (
            ("Quick check", "quick_check"),
            ("Full check", "full_check"),
            ("Repair", "repair"),
            ("Download", "download"),
            ("Update", "update"),
            ("Roll back", "rollback"),
        ):
            handler = download if method == "download" else model_action(method)
            buttons[name].click(handler, chosen, report, api_name=f"model_{method}").then(model_table, None, table)
        preview.click(cleanup_preview, gigabytes, [plan_table, plan], api_name=False)
        apply.click(lambda p: actions().apply_cleanup(p), plan, report, api_name=False).then(model_table, None, table)
        with gr.Tab("Scenarios"):
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
        with gr.Tab("Metrics"):
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
            ticker = gr.Timer(15)
        metrics_outputs = [headline, *plots, recent]
        refresh_metrics.click(metrics_view, None, metrics_outputs, api_name="metrics")
        ticker.tick(metrics_view, None, metrics_outputs, api_name=False, show_progress="hidden")
        demo.load(model_table, None, table).then(model_picker, None, model).then(metrics_view, None, metrics_outputs)
        demo.load(chaos_panel, None, [chaos_note, chaos_controls, fault_table], api_name=False)
    return demo


demo = build_app()


def build_server() -> FastAPI:
    """One server: the REST API and event feed under ``/api/v1``, the Gradio page at ``/``."""
    server = FastAPI(title="Kintsugi", docs_url="/api/v1/docs", openapi_url="/api/v1/openapi.json")
    server.include_router(build_router(get_service, feed))
    demo.queue(max_size=get_service().settings.queue_size)
    return gr.mount_gradio_app(
        server, demo, path="/", allowed_paths=[str(get_service().settings.outputs_dir)], show_error=False
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
