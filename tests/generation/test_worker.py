"""The supervised worker process: real crashes, a real memory cap, errors that cross the process boundary."""

from __future__ import annotations

import pickle
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.generation.request import GenerationOutput, GenerationRequest
from components.generation.worker import Worker, WorkerConfig
from recovery.errors import GenerationCancelledError, OutOfMemoryError, WorkerCrashedError

SMALL = GenerationRequest(prompt="a lantern", width=64, height=64, num_frames=5, steps=2, seed=5)
LONG = GenerationRequest(prompt="a lantern", width=256, height=256, num_frames=33, steps=12, seed=5)
ENDLESS = GenerationRequest(prompt="a lantern", width=256, height=256, num_frames=33, steps=200, seed=5)


def _run(worker: Worker, request: GenerationRequest, output: Path, model: Path) -> GenerationOutput:
    events = list(worker.run(request, output, model_path=model))
    assert events[-1].kind == "result" and events[-1].output is not None
    return events[-1].output


def test_generation_in_worker_streams_phases_progress_and_result(
    worker: Worker, tiny_model: Path, tmp_path: Path
) -> None:
    """A job yields its phases in order, one progress event per denoising step and per decoder chunk (a latent
    frame: 5 frames are 2), then the result with the mp4 path."""
    events = list(worker.run(SMALL, tmp_path / "v.mp4", model_path=tiny_model))
    assert [e.data["phase"] for e in events if e.kind == "phase"] == ["load", "denoise", "decode", "export"]
    assert [(e.data["phase"], e.data["step"], e.data["total"]) for e in events if e.kind == "progress"] == [
        ("denoise", 1, 2),
        ("denoise", 2, 2),
        ("decode", 1, 2),
        ("decode", 2, 2),
    ]
    assert events[-1].kind == "result" and Path(events[-1].output.video_path).is_file()


def test_sigkill_mid_generation_is_noticed_within_a_second(worker: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """Killing the worker while it denoises ends the job with WorkerCrashedError naming the signal and phase."""
    killed_at = 0.0
    with pytest.raises(WorkerCrashedError) as caught:
        for event in worker.run(LONG, tmp_path / "v.mp4", model_path=tiny_model):
            if event.kind == "progress" and event.data["step"] == 2:
                killed_at = time.monotonic()
                worker.kill()
    assert time.monotonic() - killed_at < 1.0
    assert caught.value.signal_name == "SIGKILL"
    assert caught.value.phase == "denoise"


def test_request_after_a_crash_succeeds_on_a_fresh_worker(worker: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """After a crash the next request runs on a new process and gives the same frames as before the crash."""
    before = _run(worker, SMALL, tmp_path / "a.mp4", tiny_model)
    old_pid = worker.pid
    with pytest.raises(WorkerCrashedError):  # killed in a job: between jobs a dead process is just replaced
        for event in worker.run(SMALL, tmp_path / "b.mp4", model_path=tiny_model):
            if event.kind == "progress":
                worker.kill()
    after = _run(worker, SMALL, tmp_path / "c.mp4", tiny_model)
    assert worker.pid != old_pid
    assert after.frames_sha256 == before.frames_sha256


def test_cancel_from_another_thread_stops_the_job(worker: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """``cancel()`` while a job denoises ends it with GenerationCancelledError; the worker stays usable."""

    def cancel_on_first_step() -> None:
        while worker_events and worker_events[-1] != "progress":
            time.sleep(0.01)
        worker.cancel()

    worker_events: list[str] = ["start"]
    canceller = threading.Thread(target=cancel_on_first_step)
    canceller.start()
    with pytest.raises(GenerationCancelledError) as caught:
        for event in worker.run(LONG, tmp_path / "v.mp4", model_path=tiny_model):
            worker_events.append(event.kind)
    canceller.join()
    assert caught.value.steps_completed < LONG.steps
    assert _run(worker, SMALL, tmp_path / "ok.mp4", tiny_model).frames == SMALL.num_frames


def _steps_run(worker: Worker) -> int:
    return int(worker.stats()["denoise_steps_run"])


def test_cancel_during_decode_stops_between_chunks_and_the_worker_stays_warm(
    worker: Worker, tiny_model: Path, tmp_path: Path
) -> None:
    """A cancel at the first decoder chunk ends the job in decode, before the next chunk; the same process then
    runs the next job."""
    request = GenerationRequest(prompt="a lantern", width=128, height=128, num_frames=33, steps=2, seed=5)
    pid = worker.pid
    chunks: list[int] = []
    with pytest.raises(GenerationCancelledError) as caught:
        for event in worker.run(request, tmp_path / "v.mp4", model_path=tiny_model, job_id="decode-job"):
            if event.kind == "progress" and event.data["phase"] == "decode":
                chunks.append(event.data["step"])
                worker.cancel("decode-job")
    assert caught.value.phase == "decode" and caught.value.steps_completed == request.steps
    assert chunks and chunks[-1] < (request.num_frames - 1) // 4 + 1
    assert not (tmp_path / "v.mp4").exists()
    assert _run(worker, SMALL, tmp_path / "ok.mp4", tiny_model).frames == SMALL.num_frames
    assert worker.pid == pid


def test_cancel_for_another_job_is_ignored(worker: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """A cancel naming another job (a late one for a job that ended) does not stop the job that runs."""
    request = GenerationRequest(prompt="a lantern", width=64, height=64, num_frames=5, steps=4, seed=5)
    events = []
    for event in worker.run(request, tmp_path / "v.mp4", model_path=tiny_model, job_id="mine"):
        events.append(event)
        if event.kind == "progress" and event.data["step"] == 1:
            worker.cancel("an-earlier-job")
    assert events[-1].kind == "result" and events[-1].output.steps_completed == request.steps


def test_cancelled_queued_job_never_starts(worker: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """A job waiting for the worker whose ``should_cancel`` says yes ends with phase ``queued`` and runs no step,
    while the job ahead of it goes on (and is then cancelled by its own id)."""
    before = _steps_run(worker)
    first_stepping, stop_waiting = threading.Event(), threading.Event()
    outcomes: dict[str, BaseException | None] = {}

    def first() -> None:
        try:
            for event in worker.run(ENDLESS, tmp_path / "a.mp4", model_path=tiny_model, job_id="ahead"):
                if event.kind == "progress":
                    first_stepping.set()
        except BaseException as exc:
            outcomes["ahead"] = exc

    ahead = threading.Thread(target=first)
    ahead.start()
    assert first_stepping.wait(60)
    with pytest.raises(GenerationCancelledError) as caught:
        waiting = worker.run(SMALL, tmp_path / "b.mp4", model_path=tiny_model, should_cancel=stop_waiting.is_set)
        threading.Timer(0.3, stop_waiting.set).start()
        list(waiting)
    assert caught.value.phase == "queued" and caught.value.steps_completed == 0
    assert ahead.is_alive() and "ahead" not in outcomes and worker.job_id == "ahead"
    worker.cancel("ahead")
    ahead.join(60)
    ahead_error = outcomes["ahead"]
    assert isinstance(ahead_error, GenerationCancelledError)
    assert _steps_run(worker) - before == ahead_error.steps_completed
    assert not (tmp_path / "b.mp4").exists() and worker.job_id is None


def test_closing_a_job_early_cancels_it_and_leaves_the_worker_idle(
    worker: Worker, tiny_model: Path, tmp_path: Path
) -> None:
    """A caller that stops reading (closes the iterator) stops the job too: the lock is free, the process the
    same, and it ran only the steps up to the close."""
    pid, before = worker.pid, _steps_run(worker)
    job = worker.run(LONG, tmp_path / "v.mp4", model_path=tiny_model)
    for event in job:
        if event.kind == "progress":
            break
    job.close()
    assert _steps_run(worker) - before < LONG.steps
    assert _run(worker, SMALL, tmp_path / "ok.mp4", tiny_model).frames == SMALL.num_frames
    assert worker.pid == pid


def test_loading_error_crosses_with_its_cause_chain(worker: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """A truncated weight file fails the load in the worker; the caller gets the library's own error type."""
    from safetensors import SafetensorError

    broken = Path(shutil.copytree(tiny_model, tmp_path / "broken"))
    weights = broken / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    request = GenerationRequest(**{**SMALL.to_dict(), "model_id": "local/broken"})
    with pytest.raises(SafetensorError, match="incomplete metadata"):
        _run(worker, request, tmp_path / "v.mp4", broken)


def test_a_segfault_names_where_the_stack_was(worker: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """A SIGSEGV (sent here; in the wild a native library's) ends the job with WorkerCrashedError naming the
    ``module.function`` faulthandler saw, in the error's field and its message."""
    with pytest.raises(WorkerCrashedError) as caught:
        for event in worker.run(LONG, tmp_path / "v.mp4", model_path=tiny_model):
            if event.kind == "progress" and event.data["step"] == 2:
                worker.kill(signal.SIGSEGV)
    assert caught.value.signal_name == "SIGSEGV"
    assert caught.value.crashed_in and re.fullmatch(r"\w+\.\w+", caught.value.crashed_in)
    assert f"killed by SIGSEGV in {caught.value.crashed_in}" in str(caught.value)


@pytest.fixture(scope="module")
def capped() -> Iterator[Worker]:
    """A CPU worker under a 400 MiB memory cap (RLIMIT_AS), shared by the tests of this module."""
    supervised = Worker(WorkerConfig(device="cpu", memory_cap=400 * 2**20))
    supervised.start()
    yield supervised
    supervised.close()


def test_memory_cap_gives_typed_oom_and_worker_stays_usable(capped: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """Under a 400 MiB cap a large request (33×512², ~0.8 GB uncapped) fails in the real allocator with the typed
    OOM error (phase, bytes); a small request in the same worker process then succeeds."""
    large = GenerationRequest(prompt="a lantern", width=512, height=512, num_frames=33, steps=2, seed=5)
    with pytest.raises(OutOfMemoryError) as caught:
        _run(capped, large, tmp_path / "big.mp4", tiny_model)
    pid = capped.pid
    error = caught.value
    assert error.phase == "decode" and error.latents_kept is True
    assert error.bytes_requested and error.bytes_requested > 0
    assert error.memory_cap == 400 * 2**20
    assert "DefaultCPUAllocator" in str(error.__cause__)
    assert _run(capped, SMALL, tmp_path / "small.mp4", tiny_model).frames == SMALL.num_frames
    assert capped.pid == pid


def test_a_segfault_under_the_memory_cap_is_an_out_of_memory(capped: Worker, tiny_model: Path, tmp_path: Path) -> None:
    """Under an address-space cap a SIGSEGV is what native code that ignores a refused allocation does (CPU
    attention here, 1 run in 3 at a tight cap), so it reaches the ladder as an out-of-memory saying how it ended;
    the next request runs on the fresh worker. (The signal is sent: a real one cannot be produced on demand.)"""
    with pytest.raises(OutOfMemoryError) as caught:
        for event in capped.run(LONG, tmp_path / "v.mp4", model_path=tiny_model):
            if event.kind == "progress" and event.data["step"] == 2:
                capped.kill(signal.SIGSEGV)
    error = caught.value
    assert (error.phase, error.reason, error.memory_cap, error.latents_kept) == (
        "denoise",
        "native_crash_at_cap",
        400 * 2**20,
        False,
    )
    assert "died of SIGSEGV" in str(error) and "memory cap" in str(error)
    assert _run(capped, SMALL, tmp_path / "small.mp4", tiny_model).frames == SMALL.num_frames


def test_typed_errors_pickle_with_their_data() -> None:
    """Our errors keep their message and data through pickle, as they must to leave the worker."""
    error = OutOfMemoryError("out of memory during decode", phase="decode", bytes_requested=123, memory_cap=None)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is OutOfMemoryError and isinstance(again, MemoryError)
    assert (str(again), again.phase, again.bytes_requested) == ("out of memory during decode", "decode", 123)


def test_the_raising_module_crosses_the_process_boundary() -> None:
    """A traceback does not pickle, so the worker records the module that raised each error of the chain; the
    classifier in the app then tells a bare assert inside flash_attn from any other."""
    from components.generation.worker import _exception_chain, rebuild_chain
    from recovery.classify import classify_exception, raised_in

    namespace: dict = {"__name__": "flash_attn.flash_attn_interface"}
    exec(compile("def check():\n    assert False\n", "<flash_attn>", "exec"), namespace)
    try:
        namespace["check"]()
    except AssertionError as error:
        rebuilt = rebuild_chain(_exception_chain(error))
    assert rebuilt.__traceback__ is None and raised_in(rebuilt) == "flash_attn.flash_attn_interface"
    assert classify_exception(rebuilt).matched_by == "module:flash_attn.flash_attn_interface"
