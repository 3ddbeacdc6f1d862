"""A weight file truncated while a warm worker's job reads it: the job ends with its video (the worker holds its
weights in memory of its own, not as views into the mapped files, so nothing touches a page past the new end), the
watch repairs the file meanwhile, and the story is told. And if a worker does die of SIGBUS with a model's file
damaged, the service checks the files, repairs them and retries once. The session's offline service and its
built-in tiny model; one shared run per situation."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.pipeline import copy_out_of_files
from components.generation.worker import Worker
from components.service import REPAIRED_DURING_RUN_NOTE, GenerationService
from components.store.health import HealthFinding, HealthTrigger, HealthWatch
from components.views.models import health_log
from components.views.presenters import timeline_line
from components.views.reports import GenerationResult, ServiceEvent
from recovery import events

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
REQUEST = {"prompt": "a paper lantern", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 5}


@dataclass
class TruncatedRun:
    """A generation during whose denoising the transformer's weights were cut to half."""

    during: list[ServiceEvent]
    pids: tuple[int | None, int | None]  # the worker's before and after the run
    found: list[HealthFinding]


def _weight_blob(service: GenerationService) -> Path:
    commit = service.store.cache.resolve(EMBEDDED_MODEL_ID, "main")
    assert commit is not None
    return (service.store.cache.snapshot_dir(EMBEDDED_MODEL_ID, commit) / WEIGHTS).resolve()


def _worker(service: GenerationService) -> Worker:
    assert isinstance(service.worker, Worker)  # the process backend: a pid and signals
    return service.worker


def _result(stream: list[ServiceEvent]) -> GenerationResult:
    result: GenerationResult = stream[-1].data["result"]
    return result


def _timeline(stream: list[ServiceEvent]) -> str:
    return "\n".join(line for line in map(timeline_line, stream) if line)


def _truncate_at_first_step(service: GenerationService, request: dict, then: object) -> list[ServiceEvent]:
    """Run ``request``; at its first denoising step cut the weights to half and call ``then()``."""
    stream: list[ServiceEvent] = []
    for event in service.generate(request):
        stream.append(event)
        first = event.data.get("attempt") == 1 and event.data.get("phase") == "denoise" and event.data.get("step") == 1
        if event.kind == "progress" and first:
            blob = _weight_blob(service)
            os.truncate(blob, blob.stat().st_size // 2)
            then()  # type: ignore[operator]
    return stream


@pytest.fixture(scope="module")
def service(offline_service: GenerationService) -> GenerationService:
    return offline_service


@pytest.fixture(scope="module")
def truncated(service: GenerationService) -> TruncatedRun:
    """The worker is suspended (SIGSTOP) right after the cut, so the job is certainly mid-denoise while a watch
    polling every 50 ms repairs the file (a new blob renamed over the cut one); then it continues (SIGCONT) and
    runs its second step and the decode. A worker holding views into the file dies of SIGBUS there."""
    watch = HealthWatch(service.store.health, interval_s=0.2, poll_s=0.05)
    watch.start()
    before = len(service.store.health.findings(EMBEDDED_MODEL_ID))

    def hold_until_repaired() -> None:
        _worker(service).kill(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            while len(service.store.health.findings(EMBEDDED_MODEL_ID)) == before:
                assert time.monotonic() < deadline, "the watch did not repair the truncated file in 30 s"
                time.sleep(0.02)
        finally:
            _worker(service).kill(signal.SIGCONT)

    pid = _worker(service).pid
    try:
        during = _truncate_at_first_step(service, REQUEST, hold_until_repaired)
    finally:
        watch.close()
    pids = (pid, _worker(service).pid)
    found = service.store.health.findings(EMBEDDED_MODEL_ID)[before:]
    return TruncatedRun(during, pids, found)


@pytest.fixture(scope="module")
def bus_error(service: GenerationService, truncated: TruncatedRun) -> list[ServiceEvent]:
    """The next request, the other way round: the weights cut to half and the worker then killed by a real SIGBUS
    (what a library still mapping the file would get), with the service's own watch paused so that the request
    finds the damage."""
    service.watch.close()
    try:
        return _truncate_at_first_step(service, REQUEST, lambda: _worker(service).kill(signal.SIGBUS))
    finally:
        service.watch.start()


def test_loaded_weights_are_copied_out_of_their_mapped_files(tiny_model: Path) -> None:
    """In-process, fp32 (no dtype cast copies anything): every tensor the loaded pipeline kept as a view into a
    mapped weight file is copied, and afterwards no weight file is mapped."""
    import torch
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(os.fspath(tiny_model), dtype=torch.float32, use_safetensors=True)
    files = {os.path.realpath(p) for p in tiny_model.rglob("*.safetensors")}
    mapped_before = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()} & files
    weight = pipe.transformer.proj_out.weight.detach().clone()
    copied = copy_out_of_files(pipe, tiny_model)
    mapped_after = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()} & files
    assert mapped_before == files and not mapped_after
    weight_bytes = sum(p.numel() * p.element_size() for c in (pipe.transformer, pipe.vae) for p in c.parameters())
    assert copied >= weight_bytes > 0
    assert torch.equal(pipe.transformer.proj_out.weight, weight)


def test_a_job_whose_weights_are_cut_mid_run_ends_with_its_video(truncated: TruncatedRun) -> None:
    """No crash (the same worker before and after), no retry: the first attempt's video."""
    result = _result(truncated.during)
    assert truncated.pids[0] is not None and truncated.pids[0] == truncated.pids[1]
    assert result.attempts == 1 and Path(result.video_path).is_file()
    assert not [e for e in truncated.during if e.kind == "recovery" and e.message == events.FAILURE_CLASSIFIED]


def test_the_cut_file_is_found_and_repaired_in_the_background(
    service: GenerationService, truncated: TruncatedRun
) -> None:
    """The watch names the file and what is wrong with it; the repair verifies; the video is labelled."""
    (finding,) = truncated.found
    assert finding.trigger is HealthTrigger.FILE_CHANGE and finding.repair.ok and finding.repair.files == (WEIGHTS,)
    assert finding.problems and "truncated" in finding.problems[0]
    assert REPAIRED_DURING_RUN_NOTE in _result(truncated.during).notes
    row = health_log(service.store).iloc[0]
    assert row["found by"] == "file change" and WEIGHTS in row["found"] and row["done"].startswith("repaired")


def test_the_next_request_is_told_and_reloads(bus_error: list[ServiceEvent]) -> None:
    """The background repair is told to the next request of the model, which loads the repaired files."""
    lines = _timeline(bus_error).split("\n- **Attempt 1 failed")[0]
    assert "model health" in lines and "file change" in lines and f"{WEIGHTS}: truncated" in lines
    assert "is loaded again" in lines


def test_a_worker_killed_by_sigbus_over_damaged_files_is_repaired_and_retried_once(
    bus_error: list[ServiceEvent],
) -> None:
    """The crash is classified as the model's damage (not a resource error), repaired, and attempt 2 succeeds."""
    classified = [e for e in bus_error if e.kind == "recovery" and e.message == events.FAILURE_CLASSIFIED]
    assert [e.data["failure_type"] for e in classified] == ["model_corruption_detected"]
    result = _result(bus_error)
    assert result.attempts == 2 and Path(result.video_path).is_file()


def test_the_timeline_says_what_the_sigbus_check_found_and_did(bus_error: list[ServiceEvent]) -> None:
    lines = _timeline(bus_error)
    assert "died of SIGBUS" in lines and f"{WEIGHTS}: truncated" in lines
    assert "Repaired the model files**: worked" in lines


def test_the_models_tab_says_a_worker_crash_found_it(service: GenerationService, bus_error: list[ServiceEvent]) -> None:
    row = health_log(service.store).iloc[0]
    assert row["found by"] == "worker crash (SIGBUS)" and WEIGHTS in row["found"] and row["done"].startswith("repaired")


def test_after_both_the_model_passes_a_full_check(service: GenerationService, bus_error: list[ServiceEvent]) -> None:
    assert service.store.health.verify(EMBEDDED_MODEL_ID).ok
