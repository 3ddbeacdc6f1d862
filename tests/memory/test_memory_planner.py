"""The planner and the ladder without a worker: constraints, the largest fitting setting, learning."""

from __future__ import annotations

import json

import pytest

from components.generation.request import GenerationRequest, RunOptions, join_parameters, split_parameters
from components.memory.adapters import MemoryLadder, PreviewDegrader
from components.memory.calibration import Measurement
from components.memory.hardware import cpu_kind
from components.memory.ladder import (
    choose_setting,
    frame_counts,
    plan_memory,
    plan_notice,
    preview_setting,
    scaled_sizes,
)
from components.memory.planner import MemoryPlanner
from recovery import Classifier
from recovery.errors import InvalidParameterError, OutOfMemoryError

MiB = 2**20
MODEL = "test/model"


def request(frames: int = 33, width: int = 512, height: int = 512, model_id: str = MODEL) -> GenerationRequest:
    return GenerationRequest(prompt="a cat", num_frames=frames, width=width, height=height, model_id=model_id)


def oom_context(parameters: dict, *, cap: int | None, phase: str = "decode", latents_kept: bool = True):
    error = OutOfMemoryError(
        "out of memory during decode",
        phase=phase,
        bytes_requested=1,
        device="cpu",
        memory_cap=cap,
        steps_completed=2,
        latents_kept=latents_kept,
    )
    return Classifier(probe=None).categorize(error, {"user_parameters": parameters, "model_id": MODEL})


@pytest.mark.parametrize("upper, expected", [(17, [13, 9, 5, 1]), (9, [5, 1]), (5, [1]), (1, []), (33, None)])
def test_frame_counts_are_4k_plus_1_and_smaller(upper: int, expected: list[int] | None) -> None:
    """Frame candidates are valid Wan counts, strictly fewer than asked, largest first."""
    counts = frame_counts(upper)
    assert all((f - 1) % 4 == 0 and f < upper for f in counts)
    assert counts == sorted(counts, reverse=True)
    if expected is not None:
        assert counts == expected


@pytest.mark.parametrize("width, height", [(512, 512), (832, 480), (480, 832), (1024, 576), (256, 144)])
def test_scaled_sizes_keep_divisibility_and_aspect_ratio(width: int, height: int) -> None:
    """Smaller sizes have sides divisible by 16 and the requested aspect ratio within 10 %."""
    sizes = scaled_sizes(width, height)
    assert sizes, "there is always a smaller size"
    for w, h in sizes:
        assert w % 16 == 0 and h % 16 == 0 and w <= width and h <= height
        assert abs(w / h - width / height) / (width / height) <= 0.1
    assert [w * h for w, h in sizes] == sorted((w * h for w, h in sizes), reverse=True)


def test_estimate_matches_calibrated_points(make_planner, truth) -> None:
    """With exact calibration points, the fit reproduces the need, also between the points."""
    planner = make_planner()
    for frames, side in ((9, 256), (21, 384), (33, 512)):
        assert planner.estimate(request(frames, side, side)) == pytest.approx(truth(frames, side, side), rel=0.01)


def test_largest_frame_count_predicted_to_fit_is_chosen(make_planner, truth) -> None:
    """Fewer frames: the most frames that fit, not a blind half — and one more step would not fit."""
    planner = make_planner(tiling_helps=False)
    budget = int(truth(21, 512, 512) + MiB)
    choice = choose_setting(planner, request(33), RunOptions(), budget)
    assert choice is not None and choice.rung == "fewer frames"
    assert choice.request.num_frames == 21 and (choice.request.width, choice.request.height) == (512, 512)
    assert truth(25, 512, 512) > budget
    assert choice.changes == (
        f"num_frames 33 → 21 to fit in {budget / MiB:.0f} MiB (predicted {round(truth(21, 512, 512) / MiB)} MiB)",
    )


def test_fewer_frames_follow_the_familys_frame_rule(make_planner, truth) -> None:
    """CogVideoX runs 8k+1 frames only: the rung offers 25 or 17, never Wan's 29 or 21 (refused at validation)."""
    cogvideox = "kintsugi/tiny-cogvideox-random"
    planner = make_planner(tiling_helps=False, model_id=cogvideox)
    budget = int(truth(21, 512, 512) + MiB)
    choice = choose_setting(planner, request(33, model_id=cogvideox), RunOptions(), budget)
    assert choice is not None and choice.rung == "fewer frames"
    assert choice.request.num_frames == 17


def test_smaller_sizes_follow_the_familys_side_rule(make_planner, truth) -> None:
    """LTX-Video runs sides ÷32 only: a lower resolution it is offered is ÷32 (Wan's ÷16 would be floored)."""
    planner = make_planner(tiling_helps=False, model_id="kintsugi/tiny-ltx-random")
    budget = int(truth(33, 432, 432) + MiB)  # ÷16 would give 432×432
    asked = request(33, 512, 512, model_id="kintsugi/tiny-ltx-random")
    choice = choose_setting(planner, asked, RunOptions(), budget, min_frames_share=0.9)
    assert choice is not None and choice.rung == "lower resolution"
    assert (choice.request.width, choice.request.height) == (416, 416)
    assert frame_counts(33, multiple=8) == [25, 17, 9, 1]


def test_largest_resolution_predicted_to_fit_keeps_aspect_ratio(make_planner, truth) -> None:
    """Lower resolution (when fewer frames are not enough): the largest ÷16 size with the same aspect ratio."""
    planner = make_planner(tiling_helps=False)
    budget = int(truth(33, 640, 352) + MiB)
    choice = choose_setting(planner, request(33, 832, 468 // 16 * 16), RunOptions(), budget, min_frames_share=0.9)
    assert choice is not None and choice.rung == "lower resolution"
    w, h = choice.request.width, choice.request.height
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 832 / 464) / (832 / 464) <= 0.1
    assert truth(33, w, h) <= budget
    bigger = [s for s in scaled_sizes(832, 464) if s[0] > w]
    assert all(truth(33, *s) > budget for s in bigger)
    assert choice.changes[0].startswith(f"resolution 832×464 → {w}×{h} (aspect ratio kept) to fit in")


def test_a_decode_oom_is_first_retried_with_the_streamed_decode(make_planner) -> None:
    """A decode OOM with latents kept retries the same request, its decode streamed (whatever the prediction:
    the plain decode's copies are what ran out), saying denoising is not repeated."""
    planner = make_planner(tiling_helps=False)
    choice = choose_setting(planner, request(33), RunOptions(), 100 * MiB, decode_retry=True)
    assert choice is not None and choice.request == request(33) and choice.rung == "streamed decode"
    assert choice.options == RunOptions(streamed_decode=True)
    assert choice.changes == (
        "streamed_decode off → on to fit in 100 MiB",
        "the kept latents are decoded again: denoising is not repeated",
    )


def test_a_decode_oom_of_a_family_decoding_in_big_chunks_is_retried_streamed_and_tiled(make_planner) -> None:
    """CogVideoX's decoder working set for one chunk is its decode's peak, so its first retry streams tiled,
    and says that the tiles are blended (not the untiled decode's frames)."""
    planner = make_planner(tiling_helps=False)
    asked = request(17, 256, 256, model_id="kintsugi/tiny-cogvideox-random")
    choice = choose_setting(planner, asked, RunOptions(), 100 * MiB, decode_retry=True)
    assert choice is not None and choice.request == asked and choice.rung == "tiled streamed decode"
    assert choice.options == RunOptions(streamed_decode=True, vae_tiling=True)
    assert choice.changes[0].startswith("vae_tiling off → on to fit in 100 MiB")
    assert choice.changes[1:] == (
        "streamed_decode off → on to fit in 100 MiB",
        "the decode runs in tiles sized from the frame, blended at their seams: not bit-identical to the untiled "
        "decode",
        "the kept latents are decoded again: denoising is not repeated",
    )


STREAMED = RunOptions(streamed_decode=True)


def test_tiling_is_the_next_rung_when_calibration_says_it_helps(make_planner) -> None:
    """A streamed decode that ran out too retries the same request with VAE tiling, saying denoising is skipped."""
    planner = make_planner(tiling_helps=True)
    budget = 300 * MiB  # 33×512²: 378 MiB untiled, 299 MiB tiled
    choice = choose_setting(planner, request(33), STREAMED, budget, decode_retry=True)
    assert choice is not None and choice.request == request(33) and choice.options.vae_tiling
    assert choice.options.streamed_decode
    assert choice.changes[0].startswith("vae_tiling off → on to fit in 300 MiB")
    assert "denoising is not repeated" in choice.changes[-1]


def test_tiling_rung_is_skipped_when_calibration_says_it_does_not_help(make_planner, truth) -> None:
    """On a VAE where tiling raises the peak, the ladder goes to fewer frames and leaves tiling off."""
    planner = make_planner(tiling_helps=False)
    budget = int(truth(33, 512, 512) - MiB)
    choice = choose_setting(planner, request(33), STREAMED, budget, decode_retry=True)
    assert choice is not None and choice.rung == "fewer frames" and not choice.options.vae_tiling


def test_nothing_fits_returns_none(make_planner) -> None:
    """Below the fixed part of the need, no rung fits: the ladder says so instead of guessing."""
    assert choose_setting(make_planner(), request(33), RunOptions(), 50 * MiB) is None
    assert preview_setting(make_planner(), request(33), RunOptions(), 50 * MiB) is None


def test_floors_hand_over_to_the_preview(make_planner, truth) -> None:
    """When only a setting below the floors fits, the adjuster declines and the degrader offers a labelled preview."""
    planner = make_planner(tiling_helps=False)
    budget = int(truth(9, 128, 128) + MiB)  # far below half the side and a quarter of the frames of 33×512²
    assert choose_setting(planner, request(33), RunOptions(), budget) is None
    preview = preview_setting(planner, request(33), RunOptions(), budget)
    assert preview is not None and preview.degraded and preview.rung == "preview"
    assert (
        preview.request.num_frames <= 9
        and truth(preview.request.num_frames, preview.request.width, preview.request.height) <= budget
    )
    assert preview.changes[0].startswith("preview: ")


def test_failure_teaches_the_planner_and_persists(make_planner, tmp_path) -> None:
    """A setting predicted to fit that failed under a cap is not predicted to fit again, nor are larger ones,
    nor similar ones — and a new planner reading the same file knows it."""
    path = tmp_path / "calibration.json"
    planner = make_planner(path, tiling_helps=False)
    cap = 300 * MiB
    small, similar = request(9, 256, 256), request(9, 240, 240)
    assert planner.fits(small, RunOptions(), cap) and planner.fits(similar, RunOptions(), cap)
    planner.record(small, RunOptions(), None, False, memory_cap=cap)
    assert not planner.fits(small, RunOptions(), cap)
    assert not planner.fits(request(13, 256, 256), RunOptions(), cap)
    assert not planner.fits(similar, RunOptions(), cap), "the fit's scale moved for settings not dominated"
    reloaded = MemoryPlanner(path, hardware="cpu", margin=0.0, defaults=None)
    assert not reloaded.fits(small, RunOptions(), cap)
    assert json.loads(path.read_text())["version"] == 1


def test_success_under_a_cap_is_trusted_over_the_fit(make_planner, truth) -> None:
    """A run that fitted under a cap makes it and every smaller setting fit there, whatever the fit says."""
    planner = make_planner(tiling_helps=False)
    cap = int(truth(17, 256, 256) * 0.9)
    assert not planner.fits(request(17, 256, 256), RunOptions(), cap)
    planner.record(request(17, 256, 256), RunOptions(), None, True, memory_cap=cap)
    assert planner.fits(request(13, 256, 256), RunOptions(), cap)


def test_exact_peaks_refine_the_fit(make_planner) -> None:
    """On CUDA a run's peak is the planner's unit: recorded peaks move the prediction toward them."""
    planner = make_planner(hardware="cuda:test:24GiB")
    target = request(9, 256, 256)
    before = planner.estimate(target)
    for _ in range(40):
        planner.record(target, RunOptions(), int(before * 2), True)
    assert planner.estimate(target) > before * 1.5


def test_peak_rss_on_cpu_is_not_taken_as_the_need(make_planner) -> None:
    """On the CPU, peak RSS is not what the cap limits: it does not move the fit unless marked exact."""
    planner = make_planner()
    target = request(9, 256, 256)
    before = planner.estimate(target)
    planner.record(target, RunOptions(), before * 3, True)
    assert planner.estimate(target) == before


def test_plan_keeps_a_fitting_request_unchanged(make_planner) -> None:
    """A request predicted to fit runs as asked, with nothing to report."""
    plan = plan_memory(make_planner(), request(9, 256, 256), RunOptions(), 2048 * MiB)
    assert plan.fits and plan.changes == () and plan.request == request(9, 256, 256)


def test_plan_adjusts_up_front_and_says_so(make_planner, truth) -> None:
    """A request predicted not to fit is adjusted before running; each change is a line."""
    planner = make_planner(tiling_helps=False)
    plan = plan_memory(planner, request(33), RunOptions(), int(truth(17, 512, 512) + MiB))
    assert plan.fits and plan.request.num_frames == 17
    assert plan.changes and all(line.startswith("planned before running: ") for line in plan.changes)
    nothing = plan_memory(planner, request(33), RunOptions(), 10 * MiB)
    assert not nothing.fits and "nothing fits" in nothing.changes[0]


def test_default_calibration_plans_the_embedded_model() -> None:
    """A fresh install knows the embedded model on this CPU: 9×128² fits in 400 MiB, 17×512² untiled does not."""
    planner = MemoryPlanner(None)
    embedded = "kintsugi/tiny-wan-random"
    assert planner.hardware == cpu_kind()
    assert planner.fits(request(9, 128, 128, embedded), RunOptions(), 400 * MiB)
    assert not planner.fits(request(17, 512, 512, embedded), RunOptions(), 400 * MiB)


@pytest.mark.parametrize(("hardware", "tiling_lowers_the_peak"), [("cpu", True), ("cpu:amx", False)])
def test_each_cpu_kind_starts_from_its_own_table(hardware: str, tiling_lowers_the_peak: bool) -> None:
    """The shipped tables differ where the CPUs do: at 5×512² tiling lowers the peak without AMX, raises it with."""
    planner = MemoryPlanner(None, hardware=hardware)
    embedded = request(5, 512, 512, "kintsugi/tiny-wan-random")
    tiled, untiled = (planner.estimate(embedded, RunOptions(vae_tiling=t)) for t in (True, False))
    assert tiled and untiled and (tiled < untiled) is tiling_lowers_the_peak


def test_unknown_model_learns_its_scale_from_a_failure() -> None:
    """For a model never calibrated, the embedded model's shape is the prior; its first OOM rescales it."""
    planner = MemoryPlanner(None)
    big = request(17, 512, 512, "other/big-model")
    cap = 4096 * MiB
    assert planner.fits(big, RunOptions(), cap)
    planner.record(big, RunOptions(), None, False, memory_cap=cap)
    assert not planner.fits(request(17, 496, 496, "other/big-model"), RunOptions(), cap)


def test_parameters_round_trip() -> None:
    """The engine's parameter dict (request fields plus "options") splits and joins without loss."""
    params = join_parameters(request(), RunOptions(vae_tiling=True))
    assert split_parameters(params) == (request(), RunOptions(vae_tiling=True))


def test_ladder_learns_and_lists_changes(make_planner, truth) -> None:
    """The adjuster records the failure, then returns the new parameters and the lines."""
    planner = make_planner(tiling_helps=False)
    cap = int(truth(17, 512, 512) + MiB)
    params = join_parameters(request(33), RunOptions())
    adjustment = MemoryLadder(planner).adjust(oom_context(params, cap=cap, phase="denoise"), params)
    assert adjustment is not None and adjustment.parameters["num_frames"] == 17
    assert any("num_frames 33 → 17" in line for line in adjustment.changes)
    assert not planner.fits(request(33), RunOptions(), cap)


def test_ladder_uses_its_budget_when_the_error_has_no_cap(make_planner, truth) -> None:
    """Without a cap in the error (e.g. CUDA), the configured budget is what must fit."""
    planner = make_planner(tiling_helps=False)
    budget = int(truth(9, 512, 512) + MiB)
    params = join_parameters(request(33), RunOptions())
    adjustment = MemoryLadder(planner, budget=budget).adjust(oom_context(params, cap=None, phase="denoise"), params)
    assert adjustment is not None and adjustment.parameters["num_frames"] == 9


def test_ladder_ignores_other_failures(make_planner) -> None:
    """Only out-of-memory is this adjuster's business; an invalid parameter is left to others."""
    params = join_parameters(request(), RunOptions())
    ctx = Classifier(probe=None).categorize(
        InvalidParameterError("bad", parameter="x", value=1, constraint="c"), {"user_parameters": params}
    )
    assert MemoryLadder(make_planner()).adjust(ctx, params) is None
    assert PreviewDegrader(make_planner()).degrade(ctx, params) is None


def test_offload_rung_only_on_cuda(make_planner, truth) -> None:
    """Model CPU offload is offered on CUDA only (it raises on the CPU)."""
    planner = make_planner(tiling_helps=False)
    for frames in (5, 9, 17, 33):  # offload keeps a quarter of the untiled need on the device
        for side in (128, 256, 512):
            planner.add_measurement(
                Measurement(MODEL, frames, side, side, False, True, int(truth(frames, side, side) / 4))
            )
    budget = int(truth(33, 512, 512) * 0.5)
    on_cuda = choose_setting(planner, request(33), RunOptions(), budget, device="cuda")
    on_cpu = choose_setting(planner, request(33), RunOptions(), budget, device="cpu")
    assert on_cuda is not None and on_cuda.options.model_cpu_offload and on_cuda.request == request(33)
    assert on_cpu is None or not on_cpu.options.model_cpu_offload


def test_plan_notice_is_none_for_a_request_that_runs_as_asked(make_planner, truth) -> None:
    """No notice when the request fits, nor when a memory switch alone (tiling, same video) makes it fit."""
    planner = make_planner(tiling_helps=True)
    assert plan_notice(planner, request(9, 256, 256), RunOptions(), 2048 * MiB) is None
    tiled_fits = int(truth(33, 512, 512, tiling=True) + MiB)
    assert not planner.fits(request(33), RunOptions(), tiled_fits)
    assert plan_notice(planner, request(33), RunOptions(), tiled_fits) is None


def test_plan_notice_offers_each_choice_with_its_predicted_memory_and_time(make_planner, truth) -> None:
    """A request that does not fit gets fewer frames (full size), a lower resolution (all frames), run anyway
    (predicted not to fit) and cancel, each with the planner's memory and the given time prediction."""
    planner = make_planner(tiling_helps=False)
    budget = int(truth(17, 512, 512) + MiB)
    notice = plan_notice(planner, request(33), RunOptions(), budget, time_of=lambda r, o: float(r.num_frames))
    assert notice is not None
    assert [o.choice for o in notice.choices] == ["fewer_frames", "lower_resolution", "run_anyway", "cancel"]
    fewer, lower, anyway, cancel = notice.choices
    assert (fewer.request.num_frames, fewer.request.width) == (17, 512) and fewer.time_s == 17.0
    assert lower.request.num_frames == 33 and lower.request.width < 512 and lower.fits
    assert all(o.memory_bytes is not None and o.memory_bytes <= budget for o in (fewer, lower))
    assert anyway.request == request(33) and not anyway.fits and anyway.memory_bytes > budget
    assert cancel.request is None and notice.automatic and "planned before running" in notice.automatic[0]


def test_a_chosen_option_becomes_a_plan_marked_as_planned_down(make_planner, truth) -> None:
    """``PlanNotice.plan``: the choice runs, its lines say it was the user's choice, and the plan is planned down
    (run anyway is not)."""
    planner = make_planner(tiling_helps=False)
    notice = plan_notice(planner, request(33), RunOptions(), int(truth(17, 512, 512) + MiB))
    assert notice is not None
    lower = notice.plan("lower_resolution")
    assert lower.planned_down and lower.asked == request(33)
    assert lower.changes and all("your choice: lower_resolution" in line for line in lower.changes)
    anyway = notice.plan("run_anyway")
    assert anyway.request == request(33) and not anyway.planned_down and "run as asked" in anyway.changes[0]


@pytest.mark.parametrize("choice", ["fewest_frames", "cancel"])
def test_a_choice_the_notice_does_not_run_names_plan_choice(make_planner, truth, choice: str) -> None:
    """An unknown choice, or cancel (which runs nothing), is refused naming ``plan_choice`` and the value."""
    notice = plan_notice(make_planner(tiling_helps=False), request(33), RunOptions(), int(truth(17, 512, 512) + MiB))
    assert notice is not None
    with pytest.raises(InvalidParameterError) as caught:
        notice.plan(choice)
    assert caught.value.parameter == "plan_choice" and choice in str(caught.value)


def test_a_plan_notice_is_plain_data_for_an_api(make_planner, truth) -> None:
    """``PlanNotice.to_dict`` is JSON: the message, the budget and each choice with its request and predictions."""
    notice = plan_notice(make_planner(tiling_helps=False), request(33), RunOptions(), int(truth(17, 512, 512) + MiB))
    assert notice is not None
    data = json.loads(json.dumps(notice.to_dict()))
    assert [c["choice"] for c in data["choices"]] == ["fewer_frames", "lower_resolution", "run_anyway", "cancel"]
    assert data["choices"][0]["request"]["num_frames"] == 17 and data["choices"][-1]["request"] is None
    assert "more than" in data["message"] and data["budget_bytes"] == notice.budget_bytes


def test_a_run_with_layerwise_casting_is_not_learnt_as_a_plain_run(tmp_path) -> None:
    """The fit is keyed by tiling and model offload: a run with fp8 weights (less memory) recorded as a plain
    run would make the plain setting look smaller than it is, so it teaches nothing."""
    planner = MemoryPlanner(tmp_path / "memory.json")
    asked = request(9, 256, 256, model_id="someone/new-model")
    before = planner.estimate(asked, RunOptions())
    for frames, side in ((9, 256), (17, 256), (9, 384), (17, 384)):
        run = request(frames, side, side, model_id="someone/new-model")
        planner.record(run, RunOptions(layerwise_casting=True), 20 * 2**20, True, memory_cap=2**30, exact=True)
    assert planner.estimate(asked, RunOptions()) == before


def test_a_decode_oom_of_a_request_predicted_to_fit_restarts_instead_of_streaming(make_planner, truth) -> None:
    """A request predicted to fit that ran out in its decode points at memory the worker held: the ladder frees it
    (restarting the worker, which loses the kept latents) rather than decoding the same latents in that worker."""

    class Freer:
        calls: list[str] = []

        def make_room(self, model_id: str, *, force: bool = False) -> list[str]:
            self.calls.append(model_id)
            return ["worker restarted"]

    planner = make_planner(tiling_helps=False)
    params = join_parameters(request(9, 256, 256), RunOptions())
    cap = int(truth(9, 256, 256) * 2)
    freer = Freer()
    adjustment = MemoryLadder(planner, freer=freer).adjust(oom_context(params, cap=cap), params)
    assert adjustment is not None and adjustment.label != "streamed decode"
    assert not adjustment.parameters["options"]["streamed_decode"]
    assert freer.calls and "worker restarted" in adjustment.changes
