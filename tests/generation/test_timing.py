"""The time model and the ETA clock without a worker: what a run teaches, how a prediction scales, how an ETA moves."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from components.generation.timing import EtaClock, PhaseEstimate, TimeModel, latent_size

MODEL = "test/model"


def request(frames: int = 17, side: int = 256, steps: int = 10, model_id: str = MODEL) -> GenerationRequest:
    return GenerationRequest(prompt="a cat", num_frames=frames, width=side, height=side, steps=steps, model_id=model_id)


def output(asked: GenerationRequest, **timings: float) -> GenerationOutput:
    """A finished run of ``asked`` that took ``timings`` (load, denoise, decode, export seconds)."""
    return GenerationOutput(
        video_path="/v.mp4",
        request=asked,
        options=RunOptions(),
        timings={"load": 0.0, "denoise": 1.0, "decode": 1.0, "export": 1.0, **timings},
        peak_memory_bytes=None,
        device="cpu",
        dtype="bfloat16",
        frames=asked.num_frames,
        width=asked.width,
        height=asked.height,
        frames_sha256="0",
        steps_completed=asked.steps,
        model_id=asked.model_id,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_is_estimated_for_a_model_never_run() -> None:
    """No run of the model here: no estimate (never a guess from another model)."""
    model = TimeModel(None)
    model.record(output(request(model_id="other/model"), load=3.0))
    assert model.estimate(request()) is None


def test_the_first_run_predicts_itself_and_scales_linearly() -> None:
    """After one run: the same request is predicted as it ran (steps measured apart from the fixed part), twice
    the steps cost twice the step time, and a larger size scales each phase by its size (the cold-start prior)."""
    model = TimeModel(None)
    model.record(output(request(steps=10), load=4.0, denoise=6.0, decode=2.0, export=0.5), step_s=0.5)
    same = model.estimate(request(steps=10))
    assert same == PhaseEstimate(4.0, 6.0, 2.0, 0.5, 0.5)
    assert model.estimate(request(steps=20)).denoise_s == pytest.approx(1.0 + 0.5 * 20)
    double = model.estimate(request(frames=33, steps=10))
    ratio = latent_size(request(frames=33)) / latent_size(request(frames=17))
    assert double.step_s == pytest.approx(0.5 * ratio)
    assert double.decode_s == pytest.approx(2.0 * 33 / 17)


def test_a_warm_load_teaches_nothing_and_a_loaded_model_costs_no_load() -> None:
    """A run whose load took 0 s (the worker kept the model) says nothing about a cold load; ``loaded=True``
    predicts no load time."""
    model = TimeModel(None)
    model.record(output(request()))  # load 0: warm
    assert model.estimate(request()) is None  # the cold load is unknown
    assert model.estimate(request(), loaded=True).load_s == 0.0
    model.record(output(request(), load=5.0))
    assert model.estimate(request()).load_s == 5.0


def test_two_sizes_fit_the_scaling_exponent() -> None:
    """With two sizes measured, the step time scales by the fitted exponent, not linearly."""
    model = TimeModel(None)
    small, large = request(side=128), request(side=256)  # 4× the latent size
    model.record(output(small, load=1.0, denoise=1.0), step_s=0.1)
    model.record(output(large, load=1.0, denoise=2.0), step_s=0.2)  # 2× the step time: exponent 0.5
    between = model.estimate(request(side=512))
    assert between.step_s == pytest.approx(0.2 * 4**0.5)


def test_the_store_survives_a_restart_and_an_unreadable_one_is_a_fresh_start(tmp_path: Path) -> None:
    """Timings are kept in the JSON file (written atomically) and read back; garbage there is ignored."""
    path = tmp_path / "run_timings.json"
    TimeModel(path, hardware="cpu-x").record(output(request(), load=2.0))
    assert json.loads(path.read_text())["version"] == 1
    assert TimeModel(path, hardware="cpu-x").estimate(request()) is not None
    assert TimeModel(path, hardware="cuda-y").estimate(request()) is None  # another machine's timings do not count
    path.write_text("{not json")
    assert TimeModel(path, hardware="cpu-x").estimate(request()) is None


def test_eta_at_each_phase_start_is_its_time_plus_the_phases_after() -> None:
    """At a phase's start the ETA is the predicted rest of the attempt, and the phase's own share."""
    eta = EtaClock(PhaseEstimate(2.0, 10.0, 3.0, 1.0, 1.0), clock=Clock())
    assert eta.phase("load").data() == {"eta_s": 16.0, "phase_eta_s": 2.0}
    assert eta.phase("denoise").data() == {"eta_s": 14.0, "phase_eta_s": 10.0}
    assert eta.phase("export").data() == {"eta_s": 1.0, "phase_eta_s": 1.0}


def test_eta_during_denoising_follows_the_measured_step_time() -> None:
    """Steps twice as slow as predicted: the ETA uses the measured s/step for the steps left, and the phases after
    denoising are rescaled by the same speed; the step time and the fixed part before step 1 are kept for the
    record."""
    clock = Clock()
    eta = EtaClock(PhaseEstimate(0.0, 10.0, 3.0, 1.0, 1.0), clock=clock)
    eta.phase("denoise")
    clock.now += 2.5  # the first step, with the fixed part
    eta.progress("denoise", 1, 10)
    clock.now += 4.0  # two more steps at 2 s each
    later = eta.progress("denoise", 3, 10)
    assert eta.step_s == pytest.approx(2.0) and eta.fixed_s == pytest.approx(0.5)
    assert later.phase_eta_s == pytest.approx(2.0 * 7)
    assert later.eta_s == pytest.approx(2.0 * 7 + (3.0 + 1.0) * 2.0)


def test_decode_progress_measures_its_own_rate_and_unknown_timings_give_no_eta() -> None:
    """Decode progress (``phase: decode``) counts down by its own measured rate; with nothing predicted, only the
    running phase has an ETA."""
    clock = Clock()
    eta = EtaClock(None, clock=clock)
    assert eta.phase("decode").data() == {"eta_s": None, "phase_eta_s": None}
    clock.now += 1.0
    first = eta.progress("decode", 1, 5)
    assert (first.eta_s, first.phase_eta_s) == (None, pytest.approx(4.0))


def test_a_recorded_run_keeps_the_fixed_part_apart_from_the_steps() -> None:
    """The per-step time measured between progress events leaves the rest of the denoising time as a fixed part;
    without it the whole time counts as steps."""
    model = TimeModel(None)
    model.record(output(request(steps=10), load=1.0, denoise=7.0), step_s=0.5)
    assert model.estimate(request(steps=40)).denoise_s == pytest.approx(2.0 + 0.5 * 40)
    plain = TimeModel(None)
    plain.record(output(request(steps=10), load=1.0, denoise=7.0))
    assert plain.estimate(request(steps=40)).denoise_s == pytest.approx(0.7 * 40)


def test_the_first_run_after_a_load_is_kept_apart_from_warm_runs() -> None:
    """A cold run's one-off costs (its decode here) predict cold runs; once a warm run is seen, warm runs are
    predicted from it, and until then from the cold one."""
    model = TimeModel(None)
    model.record(output(request(), load=3.0, decode=2.0))
    assert model.estimate(request(), loaded=True).decode_s == 2.0
    model.record(output(request(), decode=0.5))  # load 0: warm
    assert model.estimate(request(), loaded=True).decode_s == 0.5
    assert model.estimate(request()).decode_s == 2.0


def test_a_moment_of_load_does_not_become_the_step_time() -> None:
    """One step slowed tenfold by another process: the step time kept for the record is the median between steps."""
    clock = Clock()
    eta = EtaClock(None, clock=clock)
    eta.phase("denoise")
    for step, seconds in enumerate([0.3, 0.1, 0.1, 1.0, 0.1, 0.1], start=1):
        clock.now += seconds
        eta.progress("denoise", step, 6)
    assert eta.step_s == pytest.approx(0.1) and eta.fixed_s == pytest.approx(0.2)


def test_one_slowed_run_does_not_move_the_prediction() -> None:
    """A run slowed tenfold (another process took the CPU) next to a normal one: the prediction stays normal."""
    model = TimeModel(None)
    model.record(output(request(), load=1.0, decode=0.5))
    model.record(output(request(), load=1.0, decode=5.0))
    assert model.estimate(request()).decode_s == 0.5


def test_a_run_with_group_offload_does_not_teach_the_plain_step_time() -> None:
    """A run slowed by a memory switch the keys did not name (group offload) is learnt under its own key: the
    plain setting stays unknown and the switched one is predicted as it ran."""
    model = TimeModel(None)
    switched = replace(output(request(steps=10), load=4.0, denoise=60.0), options=RunOptions(group_offload=True))
    model.record(switched, step_s=6.0)
    assert model.estimate(request(steps=10)) is None  # the load is known; the plain step time is not
    assert model.estimate(request(steps=10), RunOptions(group_offload=True)).step_s == pytest.approx(6.0)
