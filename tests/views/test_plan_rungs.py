"""The plan notice on the page when only a slow memory switch fits: the choice and its time cost, in form words."""

from __future__ import annotations

from components.generation.request import GenerationRequest, RunOptions
from components.memory.calibration import Measurement
from components.memory.ladder import plan_notice
from components.memory.planner import MemoryPlanner
from components.memory.rungs import ModelWeights
from components.views.studio import plan_prompt

GiB = 2**30
MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WEIGHTS = ModelWeights({"transformer": 2 * GiB, "text_encoder": GiB, "vae": GiB // 10})


def test_the_page_shows_sequential_offload_as_run_as_asked_with_its_time_cost() -> None:
    """ "Run as asked anyway" carries the switch line (≈10× the denoising time, full quality) and a button label with
    its predicted memory and seconds; the lower settings stay offered beside it."""
    planner = MemoryPlanner(None, hardware="cuda-test", margin=0.0, defaults=None)
    for frames in (5, 9, 17, 33):
        for side in (128, 256, 512):
            need = WEIGHTS.total + int(40 * 2**20 * side * side / 1e6 * frames)
            planner.add_measurement(Measurement(MODEL, frames, side, side, False, False, need))
    asked = GenerationRequest(prompt="a cat", num_frames=33, width=512, height=512, model_id=MODEL)
    budget = int(planner.estimate(asked) or 0) - int(3.0 * GiB)
    notice = plan_notice(
        planner,
        asked,
        RunOptions(),
        budget,
        device="cuda",
        time_of=lambda request, _options: 60.0,
        weights=lambda model_id: WEIGHTS if model_id == MODEL else None,
    )
    assert notice is not None
    prompt = plan_prompt(notice)
    assert "Sequential CPU offload off → on" in prompt.message and "≈10× the denoising time" in prompt.message
    assert prompt.buttons["run_anyway"] is not None and "10 min" in prompt.buttons["run_anyway"]
    assert prompt.buttons["fewer_frames"] is not None and prompt.buttons["lower_resolution"] is not None
