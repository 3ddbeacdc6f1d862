"""The ladder's last rung, a smaller model: the catalogue's smaller sibling, only with the user's consent, only once
no lower setting fits, and then a model switch the engine carries out like a fallback."""

from __future__ import annotations

from typing import Any

import pytest

from components.generation.request import GenerationRequest, RunOptions, join_parameters, split_parameters
from components.memory.adapters import MemoryLadder
from components.memory.calibration import Measurement
from components.memory.ladder import smaller_model_setting
from components.memory.planner import MemoryPlanner
from components.store.catalog import ENTRIES, IntelligentFallbackManager
from recovery import Classifier, EnhancedErrorRecovery, events
from recovery.errors import OutOfMemoryError

MiB = 2**20
BIG, SMALL = "test/model", "test/small"


def request(frames: int = 33, side: int = 512, model_id: str = BIG) -> GenerationRequest:
    return GenerationRequest(prompt="a cat", num_frames=frames, width=side, height=side, model_id=model_id)


@pytest.fixture
def planner(make_planner) -> MemoryPlanner:
    """The synthetic big model (100 MiB fixed) and a sibling a tenth its size: 10 MiB + 40 MiB/Mpx + 2 MiB/Mpx·frame."""
    planner = make_planner(tiling_helps=False)
    for tiling in (False, True):
        for frames in (5, 9, 17, 33):
            for side in (128, 256, 512):
                mp = side * side / 1e6
                need = (10 + 40 * mp + 2 * mp * frames) * MiB
                planner.add_measurement(Measurement(SMALL, frames, side, side, tiling, False, int(need)))
    return planner


def oom(parameters: dict[str, Any], *, allowed: bool | None, tried: tuple[str, ...] = (BIG,), cap: int = 50 * MiB):
    """The context the engine builds for an out-of-memory under ``cap`` (default 50 MiB: below the big model's
    fixed part) with the user's consent to another model as ``allowed`` says (``None``: not said)."""
    error = OutOfMemoryError("out of memory during load", phase="load", bytes_requested=1, device="cpu", memory_cap=cap)
    state: dict[str, Any] = {"tried_models": list(tried)}
    if allowed is not None:
        state["fallback_allowed"] = allowed
    return Classifier(probe=None).categorize(
        error, {"user_parameters": parameters, "model_id": BIG, "correlation_id": "r1", "system_state": state}
    )


def ladder(planner: MemoryPlanner) -> MemoryLadder:
    return MemoryLadder(planner, smaller={BIG: SMALL}.get)


def test_with_consent_the_smaller_sibling_runs_the_request_as_asked(planner: MemoryPlanner) -> None:
    """No setting of the big model fits 50 MiB; the sibling fits at 33×512²: the adjustment names it, keeps the
    request, and its first line names both models and that another model was allowed."""
    params = join_parameters(request(), RunOptions())
    adjustment = ladder(planner).adjust(oom(params, allowed=True), params)
    assert adjustment is not None and adjustment.model_id == SMALL and adjustment.label == "smaller model"
    asked, _options = split_parameters(adjustment.parameters)
    assert asked == request(model_id=SMALL)
    assert adjustment.changes[0].startswith(f"model {BIG} → {SMALL} (its smaller sibling; another model was allowed)")


@pytest.mark.parametrize("allowed", [False, None], ids=["refused", "not-said"])
def test_without_consent_there_is_no_smaller_model(planner: MemoryPlanner, allowed: bool | None) -> None:
    """``fallback_allowed`` False, or absent: the rung is not taken (the request is left to the preview)."""
    params = join_parameters(request(), RunOptions())
    assert ladder(planner).adjust(oom(params, allowed=allowed), params) is None


def test_a_lower_setting_that_fits_comes_before_the_smaller_model(planner: MemoryPlanner, truth) -> None:
    """Under a cap where 17 frames of the big model fit, the ladder lowers the frames and keeps the model."""
    cap = int(truth(17, 512, 512) + MiB)
    params = join_parameters(request(), RunOptions())
    adjustment = ladder(planner).adjust(oom(params, allowed=True, cap=cap), params)
    assert adjustment is not None and adjustment.model_id is None
    assert adjustment.parameters["model_id"] == BIG and adjustment.parameters["num_frames"] == 17


def test_the_sibling_starts_again_from_the_first_setting_of_the_request(planner: MemoryPlanner, truth) -> None:
    """A request already lowered by the ladder (33 → 17 frames) that still fails: the sibling gets the 33 frames
    first asked of this ladder, not the lowered 17; the lines say what differs from the failed try."""
    steps = ladder(planner)
    first = join_parameters(request(), RunOptions())
    lowered = steps.adjust(oom(first, allowed=True, cap=int(truth(17, 512, 512) + MiB)), first)
    assert lowered is not None and lowered.parameters["num_frames"] == 17
    adjustment = steps.adjust(oom(dict(lowered.parameters), allowed=True), dict(lowered.parameters))
    assert adjustment is not None and adjustment.model_id == SMALL
    assert adjustment.parameters["num_frames"] == 33
    assert any("num_frames 17 → 33" in line for line in adjustment.changes)


def test_a_sibling_that_does_not_fit_either_is_lowered_or_refused(planner: MemoryPlanner) -> None:
    """The sibling at the asked setting does not fit 15 MiB, one of its lower rungs does; in 5 MiB nothing does."""
    asked = request()
    lowered = smaller_model_setting(planner, asked, asked, RunOptions(), 15 * MiB, SMALL)
    assert lowered is not None and lowered.request.model_id == SMALL and lowered.degraded
    assert (lowered.request.num_frames, lowered.request.width) < (33, 512)
    assert smaller_model_setting(planner, asked, asked, RunOptions(), 5 * MiB, SMALL) is None


def test_a_sibling_already_tried_is_not_offered_again(planner: MemoryPlanner) -> None:
    """The request already ran on the sibling (a fallback took it there): no rung back to it."""
    params = join_parameters(request(), RunOptions())
    assert ladder(planner).adjust(oom(params, allowed=True, tried=(BIG, SMALL)), params) is None


@pytest.mark.parametrize(
    "model_id, sibling",
    [
        ("Wan-AI/Wan2.1-T2V-14B-Diffusers", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
        ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "Wan-AI/Wan2.2-TI2V-5B-Diffusers"),
        ("THUDM/CogVideoX-5b", "THUDM/CogVideoX-2b"),
        ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", None),
    ],
)
def test_the_catalogue_names_the_smaller_sibling(model_id: str, sibling: str | None) -> None:
    """The rung's siblings come from the catalogue: 14B → 1.3B, A14B → TI2V-5B, CogVideoX 5B → 2B; none below 1.3B."""
    assert IntelligentFallbackManager(ENTRIES).smaller_model(model_id) == sibling


def test_the_engine_switches_to_the_sibling_and_marks_the_outcome_like_a_fallback(planner: MemoryPlanner) -> None:
    """Through the recovery engine: the ladder's model switch is announced (``recovery.model_switched``), the next
    try runs on the sibling, and the outcome is degraded with the change line. The attempt stands in for the worker
    (the service test runs the real one): the big model fails as a capped worker does, the sibling runs."""
    seen: list[events.RecoveryEvent] = []
    engine = EnhancedErrorRecovery(adjuster=ladder(planner), probe=None, sleep=lambda _s: None)
    engine.bus.subscribe(seen.append)

    def attempt(parameters: Any, info: Any) -> str:
        if info.model_id == BIG:
            raise OutOfMemoryError("out of memory during load", phase="load", device="cpu", memory_cap=50 * MiB)
        return f"video of {parameters['model_id']}"

    outcome = engine.run(attempt, join_parameters(request(), RunOptions()), model_id=BIG, allow_fallback=True)
    assert outcome.ok and outcome.value == f"video of {SMALL}" and outcome.model_id == SMALL
    assert outcome.degraded and any(line.startswith(f"model {BIG} → {SMALL}") for line in outcome.changes)
    assert [(e.data["old"], e.data["new"]) for e in seen if e.name == events.MODEL_SWITCHED] == [(BIG, SMALL)]
