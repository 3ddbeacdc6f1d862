"""The GPU ladder's memory switches without a worker: their order, CUDA-only rungs skipped on the CPU, the climb on a
"cuda" device by prediction from weight bytes, and the time cost each one turned on reports."""

from __future__ import annotations

import typing

import diffusers
import pytest

from components.generation.families.registry import FAMILIES
from components.generation.request import GenerationRequest, RunOptions, join_parameters
from components.memory.adapters import MemoryLadder
from components.memory.calibration import Measurement
from components.memory.ladder import choose_setting, plan_memory, plan_notice
from components.memory.planner import MemoryPlanner
from components.memory.rungs import (
    LAYERWISE_FAMILIES,
    OFFLOADS,
    RUNGS,
    ModelWeights,
    WeightBook,
    predicted_bytes,
    resident_bytes,
    switch_variants,
    time_ratio,
)
from recovery import Classifier
from recovery.errors import OutOfMemoryError

MiB, GiB = 2**20, 2**30
MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # a catalogued Wan: its family stores the transformer in fp8
WEIGHTS = ModelWeights({"transformer": 2 * GiB, "text_encoder": 1 * GiB, "vae": 100 * MiB}, dtype_bytes=2)
ACTIVATIONS_PER_MP_FRAME = 40 * MiB  # what the synthetic need adds per Mpixel·frame, besides the weights


def need(frames: int, side: int) -> int:
    """The synthetic truth: all weights on the device, plus activations."""
    return WEIGHTS.total + int(ACTIVATIONS_PER_MP_FRAME * side * side / 1e6 * frames)


@pytest.fixture(scope="module")
def planner() -> MemoryPlanner:
    """A planner measured on ``MODEL`` without any switch but tiling (which does not help here)."""
    planner = MemoryPlanner(None, hardware="cuda-test", margin=0.0, defaults=None)
    for tiling in (False, True):
        for frames in (5, 9, 17, 33):
            for side in (128, 256, 512):
                planner.add_measurement(Measurement(MODEL, frames, side, side, tiling, False, need(frames, side)))
    return planner


def weights_of(model_id: str) -> ModelWeights | None:
    return WEIGHTS if model_id == MODEL else None


def asked(frames: int = 33, side: int = 512) -> GenerationRequest:
    return GenerationRequest(prompt="a cat", num_frames=frames, width=side, height=side, model_id=MODEL)


def first_switch(options: RunOptions) -> list[str]:
    return [r.name for r in RUNGS if getattr(options, r.name)]


def test_the_rungs_are_in_the_issue_order_cheapest_loss_first() -> None:
    """Tiling, model offload, group offload, layerwise casting, sequential offload — and the variants follow."""
    assert [r.name for r in RUNGS] == [
        "vae_tiling",
        "model_cpu_offload",
        "group_offload",
        "layerwise_casting",
        "sequential_offload",
    ]
    seen: list[str] = []
    for variant in switch_variants(RunOptions(), "cuda"):
        seen += [name for name in first_switch(variant) if name not in seen and name != "vae_tiling"]
    assert seen == ["model_cpu_offload", "group_offload", "layerwise_casting", "sequential_offload"]


def test_a_variant_never_stacks_two_offloads() -> None:
    """diffusers refuses stacked offload hooks: every variant has at most one offload on."""
    for variant in switch_variants(RunOptions(), "cuda"):
        assert sum(getattr(variant, name) for name in OFFLOADS) <= 1


def test_cuda_only_rungs_are_skipped_on_the_cpu() -> None:
    """On the CPU the switches are tiling and layerwise casting only (the offloads raise there)."""
    variants = switch_variants(RunOptions(), "cpu")
    assert not any(getattr(v, name) for v in variants for name in OFFLOADS)
    assert any(v.layerwise_casting for v in variants)


def test_layerwise_casting_is_skipped_for_a_model_whose_family_is_unknown(planner: MemoryPlanner) -> None:
    """A model not known by id gets no fp8 rung: the ladder cannot tell whether its transformer supports it."""
    assert not any(v.layerwise_casting for v in switch_variants(RunOptions(), "cpu", layerwise=False))
    unknown = GenerationRequest(prompt="a cat", num_frames=33, width=512, height=512, model_id="someone/model")
    choice = choose_setting(planner, unknown, RunOptions(), need(33, 512) - GiB, device="cpu", weights=weights_of)
    assert choice is None or not choice.options.layerwise_casting


def test_layerwise_families_are_those_whose_transformer_declares_its_skip_layers() -> None:
    """The families offered fp8 storage are exactly those whose diffusers transformer keeps norms out of it."""
    declared = set()
    for family in FAMILIES:
        hint = typing.get_type_hints(getattr(diffusers, family.pipeline_class).__init__)["transformer"]
        classes = [c for c in (typing.get_args(hint) or (hint,)) if c is not type(None)]
        if all(getattr(c, "_skip_layerwise_casting_patterns", None) for c in classes):
            declared.add(family.name)
    assert declared == LAYERWISE_FAMILIES


# Budgets (bytes under the need as asked) at which each rung is the first predicted to fit on "cuda".
CLIMB = [
    (0.5 * GiB, "model_cpu_offload"),  # saves the text encoder and VAE: 1.1 GiB
    (2.0 * GiB, "group_offload"),  # keeps 10 % of every component: saves 2.8 GiB
    (2.85 * GiB, "layerwise_casting"),  # and the transformer in fp8: saves 2.9 GiB
    (3.0 * GiB, "sequential_offload"),  # keeps 2 %: saves 3.0 GiB
]


@pytest.mark.parametrize("short_by, expected", CLIMB)
def test_on_cuda_each_rung_is_chosen_where_it_is_the_first_to_fit(
    planner: MemoryPlanner, short_by: float, expected: str
) -> None:
    """The full request is kept, with the first switch predicted to fit from the weight bytes it moves."""
    budget = need(33, 512) - int(short_by)
    choice = choose_setting(planner, asked(), RunOptions(), budget, device="cuda", weights=weights_of)
    assert choice is not None and choice.request == asked()
    assert first_switch(choice.options)[-1] == expected
    assert choice.estimate <= budget


def test_on_cuda_the_rungs_are_climbed_in_order_after_each_failure(planner: MemoryPlanner) -> None:
    """Each out-of-memory moves to the next switch setting, never back to one that failed, each switch line with
    its time cost; once the switches are spent, fewer frames."""
    budget = need(33, 512) - int(0.5 * GiB)
    params = join_parameters(asked(), RunOptions(vae_tiling=True))  # tiled already: the offloads are left
    ladder = MemoryLadder(planner, budget=budget, device="cuda", weights=weights_of)
    climbed = []
    for _ in range(5):
        error = OutOfMemoryError("out of memory", phase="denoise", device="cuda", memory_cap=budget)
        ctx = Classifier(probe=None).categorize(error, {"user_parameters": params, "model_id": MODEL})
        adjustment = ladder.adjust(ctx, params)
        assert adjustment is not None
        params = dict(adjustment.parameters)
        climbed.append(adjustment.label)
        if adjustment.label != "fewer frames":
            assert any("≈" in line and "× the" in line for line in adjustment.changes)
    assert climbed == [
        "model CPU offload",
        "group offload",
        "layerwise casting (fp8 weights)",
        "sequential CPU offload",
        "fewer frames",
    ]


def test_a_switch_line_says_its_time_cost(planner: MemoryPlanner) -> None:
    """ "sequential_offload off → on to fit in …: ≈10× the denoising time, full quality (source)"."""
    budget = need(33, 512) - int(3.0 * GiB)
    choice = choose_setting(planner, asked(), RunOptions(), budget, device="cuda", weights=weights_of)
    assert choice is not None
    (line,) = [line for line in choice.changes if line.startswith("sequential_offload off → on")]
    assert "to fit in" in line and "≈10× the denoising time, full quality" in line and "PR #11682" in line


def test_without_weights_no_saving_is_claimed(planner: MemoryPlanner) -> None:
    """A model whose weights are unknown is predicted at the planner's need without the switch."""
    options = RunOptions(group_offload=True)
    assert predicted_bytes(planner.estimate, asked(), options, None) == planner.estimate(asked(), RunOptions())
    assert predicted_bytes(planner.estimate, asked(), options, WEIGHTS) < planner.estimate(asked(), RunOptions())


@pytest.mark.parametrize(
    "options, on_device",
    [
        (RunOptions(), WEIGHTS.total),
        (RunOptions(model_cpu_offload=True), 2 * GiB),
        (RunOptions(group_offload=True), int(0.1 * WEIGHTS.total)),
        (RunOptions(sequential_offload=True), int(0.02 * WEIGHTS.total)),
    ],
)
def test_resident_bytes_follow_the_documented_shares(options: RunOptions, on_device: int) -> None:
    """Model offload: the largest component; group offload: 10 %; sequential: 2 % (see rungs.py for sources)."""
    assert resident_bytes(WEIGHTS, options) == pytest.approx(on_device, rel=1e-6)


def test_layerwise_casting_halves_the_bf16_transformer_less_its_skipped_layers() -> None:
    """fp8 storage of a bf16 transformer: about half its bytes (the skip layers stay bf16); others unchanged."""
    saved = resident_bytes(WEIGHTS, RunOptions()) - resident_bytes(WEIGHTS, RunOptions(layerwise_casting=True))
    assert 0.45 * 2 * GiB < saved < 0.5 * 2 * GiB


@pytest.mark.parametrize(
    "old, new, ratio",
    [
        (RunOptions(), RunOptions(group_offload=True, layerwise_casting=True), 1.1 * 1.13),  # one phase: multiply
        (RunOptions(), RunOptions(vae_tiling=True, group_offload=True), 1.8),  # decode and denoising: the larger
        (RunOptions(), RunOptions(vae_tiling=True, model_cpu_offload=True), 1.1 * 1.8),  # the whole run, on top
        (RunOptions(vae_tiling=True), RunOptions(vae_tiling=True, group_offload=True), 1.1),  # already on: free
    ],
)
def test_time_ratio_is_an_upper_bound_over_the_phases(old: RunOptions, new: RunOptions, ratio: float) -> None:
    """Ratios of one phase multiply, of different phases the larger bounds the run, a whole-run one applies to all."""
    assert time_ratio(old, new, "cuda") == pytest.approx(ratio)


def test_a_plan_with_group_offload_keeps_the_request_and_needs_no_notice(planner: MemoryPlanner) -> None:
    """≈1.1× the time, full quality: planned silently (with its line), no question to the user."""
    budget = need(33, 512) - int(2.0 * GiB)
    assert plan_notice(planner, asked(), RunOptions(), budget, device="cuda", weights=weights_of) is None
    plan = plan_memory(planner, asked(), RunOptions(), budget, device="cuda", weights=weights_of)
    assert plan.request == asked() and plan.options.group_offload and not plan.planned_down
    assert any("group_offload off → on" in line and "≈1.1× the denoising time" in line for line in plan.changes)


def test_a_slow_rung_is_the_users_choice_at_the_plan_notice(planner: MemoryPlanner) -> None:
    """Only sequential offload fits at full size: the notice offers it as "run as asked" (≈10× the time, full
    quality) beside the lower settings, each with its predicted seconds."""
    budget = need(33, 512) - int(3.0 * GiB)

    def seconds(request: GenerationRequest, options: RunOptions) -> float:
        return request.num_frames * request.width * request.height / 1e5

    notice = plan_notice(planner, asked(), RunOptions(), budget, device="cuda", time_of=seconds, weights=weights_of)
    assert notice is not None and "sequential CPU offload" in notice.message
    slow = notice.option("run_anyway")
    assert slow.fits and slow.options is not None and slow.options.sequential_offload and slow.request == asked()
    assert slow.time_s == pytest.approx(seconds(asked(), RunOptions()) * 10.0)
    plan = notice.plan("run_anyway")
    assert plan.fits and plan.options.sequential_offload
    assert all(line.startswith("planned before running (your choice: run_anyway): ") for line in plan.changes)


def test_the_weight_book_answers_per_model() -> None:
    """What was told for a model is what ``of`` gives back; another model is unknown."""
    book = WeightBook()
    book.know(MODEL, {"transformer": 10}, dtype_bytes=4)
    assert book.of(MODEL) == ModelWeights({"transformer": 10}, 4)
    assert book.of("other/model") is None


def test_model_offload_without_its_own_measurement_starts_from_the_tiled_need(make_planner) -> None:
    """The planner has no offload points: tiling + model offload is the tiled need less the moved weights."""
    planner = make_planner(tiling_helps=True)
    small = ModelWeights({"transformer": 50 * MiB, "text_encoder": 30 * MiB, "vae": 5 * MiB})
    request = GenerationRequest(prompt="a cat", num_frames=33, width=512, height=512, model_id="test/model")
    tiled = planner.estimate(request, RunOptions(vae_tiling=True))
    assert tiled is not None and tiled != planner.estimate(request, RunOptions())
    both = RunOptions(vae_tiling=True, model_cpu_offload=True)
    assert predicted_bytes(planner.estimate, request, both, small) == tiled - 35 * MiB
