"""The Generate tab's logic without Gradio: the form as a request, presets, a run's frames, stopping a request."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.generation.families import family_for_model_id
from components.generation.images import ImageUse
from components.generation.request import LIMITS, GenerationOutput, GenerationRequest, RunOptions, validate_request
from components.memory.ladder import PlanNotice, PlanOption
from components.service import GenerationService
from components.settings import Settings
from components.views.reports import GenerationResult, ServiceEvent
from components.views.studio import (
    ASPECTS,
    PLAN_BUTTONS,
    SIZES,
    StudioRun,
    check_plan,
    fallback_default,
    form_image,
    form_request,
    form_values,
    image_field,
    plan_prompt,
    preset_size,
)
from recovery import events
from recovery.errors import InvalidParameterError

FORM = {
    "prompt": "a boat",
    "negative_prompt": "",
    "model_id": "kintsugi/tiny-wan-random",
    "width": 100.0,
    "height": 64.0,
    "num_frames": 10.0,
    "steps": 0.0,
    "guidance_scale": 5.0,
    "seed": -5.0,
    "fps": 8.0,
    "allow_fallback": True,
}


def test_form_request_asks_for_a_random_seed_and_corrects_zero_steps_saying_so() -> None:
    """A negative seed becomes "draw one"; 0 steps runs 1, and the page lists that correction."""
    request, corrections = form_request(FORM)
    assert request["seed"] is None and request["steps"] == 1 and request["allow_fallback"] is True
    assert corrections == ["steps 0 → 1 (a video needs at least one denoising step)"]


def test_a_valid_form_is_sent_as_it_is() -> None:
    """Nothing the page needs to correct: no page corrections, values untouched."""
    request, corrections = form_request({**FORM, "steps": 4.0, "seed": 7.0})
    assert corrections == [] and request["steps"] == 4.0 and request["seed"] == 7.0


@pytest.mark.parametrize("aspect", list(ASPECTS))
@pytest.mark.parametrize("size", list(SIZES))
def test_every_preset_is_a_size_wan_runs_unchanged(aspect: str, size: str) -> None:
    """Each aspect-ratio and size preset passes validation with no correction, close to its ratio."""
    width, height = preset_size(aspect, size)
    across, down = ASPECTS[aspect]
    checked, corrections = validate_request(GenerationRequest("p", width=width, height=height), auto_correct=False)
    assert corrections == [] and max(width, height) <= LIMITS.max_side
    assert abs(width / height - across / down) < 0.05


@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_presets_follow_the_chosen_models_shape_rules(aspect: str) -> None:
    """For LTX-Video (sides ÷32) each preset is a size it runs unchanged, still close to its ratio."""
    from components.generation.families import rules_for_model

    rules = rules_for_model("kintsugi/tiny-ltx-random")
    width, height = preset_size(aspect, "Medium (480)", side_multiple=rules.side_multiple)
    assert width % 32 == 0 and height % 32 == 0
    request = GenerationRequest("p", width=width, height=height, num_frames=9, model_id="kintsugi/tiny-ltx-random")
    assert validate_request(request, auto_correct=False)[1] == []
    across, down = ASPECTS[aspect]
    assert abs(width / height - across / down) < 0.08


def _result(request: GenerationRequest) -> GenerationResult:
    output = GenerationOutput(
        "/out/v.mp4", request, RunOptions(), {"denoise": 1.0}, None, "cpu", "bfloat16", 9, 96, 64, "0" * 64, 1
    )
    return GenerationResult("/out/v.mp4", request, ("width 100 → 96",), (), False, 1, "r1", output)


def test_a_run_writes_the_checked_request_back_once_and_ends_with_the_video() -> None:
    """The first frame carries the form's numbers as the service checked them (the drawn seed too); the last one
    the video, with the page's and the service's corrections listed."""
    checked = GenerationRequest("a boat", width=96, height=64, num_frames=9, steps=1, seed=4242)
    run = StudioRun("r1", lambda: checked.to_dict(), ("steps 0 → 1 (a video needs at least one denoising step)",))
    stream = [
        ServiceEvent("correction", "width 100 → 96 (Wan needs sides divisible by 16)", {}),
        ServiceEvent("phase", "denoise", {"phase": "denoise", "attempt": 1}),
        ServiceEvent("progress", "step 1/1", {"step": 1, "total": 1, "attempt": 1}),
        ServiceEvent("result", "done", {"result": _result(checked)}),
    ]
    frames = list(run.frames(stream))
    assert frames[0].form == {
        "width": 96,
        "height": 64,
        "num_frames": 9,
        "steps": 1,
        "guidance_scale": 5.0,
        "seed": 4242,
        "fps": 8,
    }
    assert all(frame.form is None for frame in frames[1:])
    last = frames[-1]
    assert last.done and last.video == "/out/v.mp4"
    assert "- Steps 0 → 1" in last.status and "- Width 100 → 96" in last.status and "Request `r1`" in last.status


def test_a_failed_attempt_is_a_warning_in_plain_words() -> None:
    """A classified failure raises a "Recovering" toast with the type in words and its name in details."""
    run = StudioRun("r2")
    data = {"attempt": 1, "failure_type": "vram_exhaustion", "severity": "medium"}
    (frame,) = run.frames([ServiceEvent("recovery", events.FAILURE_CLASSIFIED, data)])
    (notice,) = frame.notices
    assert notice.level == "warning" and "Not enough memory" in notice.text and "vram_exhaustion" in notice.text


def test_form_values_show_whole_numbers_as_integers() -> None:
    """96.0 shows as 96; fields the request lacks are left out."""
    assert form_values({"width": 96.0, "guidance_scale": 5.5}) == {"width": 96, "guidance_scale": 5.5}


@pytest.mark.parametrize(("length", "warned"), [(10, False), (LIMITS.max_prompt_chars, False), (2100, True)])
def test_prompt_counter_warns_before_the_limit_refuses(length: int, warned: bool) -> None:
    """The counter shows characters over the limit; a prompt at the limit is fine."""
    from components.views.page import prompt_counter

    text = prompt_counter("x" * length)
    assert text.startswith(f"{'⚠ ' if warned else ''}{length} / {LIMITS.max_prompt_chars} characters")
    assert ("100 too many" in text) is warned


@pytest.mark.parametrize(
    ("model_id", "ticked"),
    [("kintsugi/tiny-wan-random", True), (" kintsugi/tiny-wan-random ", True), ("foo/bar", False), (None, False)],
)
def test_another_model_is_allowed_by_default_only_for_the_default_model(model_id: str | None, ticked: bool) -> None:
    """ "Allow another model" starts ticked for the configured default model, unticked for a model the user named."""
    assert fallback_default(model_id, "kintsugi/tiny-wan-random") is ticked


def test_an_api_client_that_does_not_say_leaves_the_fallback_to_the_service() -> None:
    """``allow_fallback`` missing or ``None`` stays ``None`` (the service's rule), a tick stays a bool."""
    assert form_request({**FORM, "allow_fallback": None})[0]["allow_fallback"] is None
    assert form_request({k: v for k, v in FORM.items() if k != "allow_fallback"})[0]["allow_fallback"] is None
    assert form_request({**FORM, "allow_fallback": False})[0]["allow_fallback"] is False


CAP = 340 * 2**20
LARGE = {**FORM, "width": 512.0, "height": 512.0, "num_frames": 33.0, "steps": 1.0, "seed": 1.0}


@pytest.fixture(scope="module")
def capped_service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    """A service under a 340 MiB worker cap, not started: the plan notice is the planner's, nothing runs."""
    data_dir = tmp_path_factory.mktemp("capped-studio")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu", worker_memory_cap=CAP)
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    service = GenerationService(settings)
    yield service
    service.close()


def test_a_request_that_fits_gets_no_plan_notice(capped_service: GenerationService) -> None:
    """The form's small request runs as asked: no notice."""
    assert check_plan(capped_service, {**FORM, "width": 64.0, "num_frames": 5.0, "steps": 1.0}) is None


def test_a_request_over_the_cap_gets_the_notice_with_a_button_per_choice(capped_service: GenerationService) -> None:
    """33×512² in 340 MiB: the notice says nothing started, and offers the four choices, each that runs with its
    predicted memory and (no run seen yet) "time unknown"; no request was journaled."""
    prompt = check_plan(capped_service, LARGE)
    assert prompt is not None and prompt.message.startswith("**Nothing has started yet.** 33 frames at 512×512")
    assert list(prompt.buttons) == list(PLAN_BUTTONS)
    for choice in ("fewer_frames", "lower_resolution", "run_anyway"):
        label = prompt.buttons[choice]
        assert label is not None and label.startswith(PLAN_BUTTONS[choice]) and "MiB" in label
        assert label.endswith("time unknown")
    assert prompt.buttons["cancel"] == "Cancel"
    assert "Fewer frames instead: " in prompt.message and "Frames 33 → " in prompt.message
    assert capped_service.journal.unfinished() == []


def test_a_request_the_service_refuses_gets_no_notice(capped_service: GenerationService) -> None:
    """An empty prompt: no notice; Generate then reports the refusal as usual."""
    assert check_plan(capped_service, {**LARGE, "prompt": ""}) is None


def test_a_choice_not_offered_has_no_button_and_a_known_time_is_shown() -> None:
    """Only fewer frames fits: lower resolution has no button; a predicted time reads "about 4.2 s"."""
    request = GenerationRequest("a boat", width=512, height=512, num_frames=33)
    fewer = GenerationRequest("a boat", width=512, height=512, num_frames=5)
    notice = PlanNotice(
        request,
        RunOptions(),
        CAP,
        700 * 2**20,
        "33 frames at 512×512 is predicted to need about 700 MiB.",
        (
            PlanOption("fewer_frames", fewer, RunOptions(), ("num_frames 33 → 5",), 300 * 2**20, 4.2, True),
            PlanOption("run_anyway", request, RunOptions(), (), 700 * 2**20, None, False),
            PlanOption("cancel", None, None, (), None, None, True),
        ),
        (),
    )
    prompt = plan_prompt(notice)
    assert prompt.buttons["lower_resolution"] is None
    assert prompt.buttons["fewer_frames"] == "Fewer frames instead · 300 MiB · about 4.2 s"
    assert prompt.buttons["run_anyway"] == "Run anyway · 700 MiB · time unknown"


# -- the start image ------------------------------------------------------------------------------------------------
def test_the_start_image_is_hidden_for_a_text_to_video_model() -> None:
    """The Wan text-to-video model takes no image: the field is hidden and says it is not used."""
    field = image_field("kintsugi/tiny-wan-random")
    assert (field.use, field.visible, field.label) == (ImageUse.NOT_TAKEN, False, "Start image (not used)")


def test_the_start_image_is_offered_for_a_model_unknown_by_id() -> None:
    """A hub id no family knows may take an image: the field shows, saying it serves image-to-video models."""
    field = image_field("someone/some-model")
    assert field.visible and field.use is ImageUse.UNKNOWN and "image-to-video" in field.info


@pytest.mark.skipif(
    family_for_model_id("kintsugi/tiny-wan-i2v-random") is None, reason="the Wan I2V family lands from another branch"
)
def test_the_start_image_is_required_for_an_image_to_video_model() -> None:
    """The Wan image-to-video model needs an image: the field shows, marked required."""
    field = image_field("kintsugi/tiny-wan-i2v-random")
    assert (field.use, field.visible, field.label) == (ImageUse.REQUIRED, True, "Start image (required)")


def test_the_forms_image_is_prepared_at_the_size_the_request_runs_at(tmp_path: Path) -> None:
    """An uploaded file becomes the request's prepared image, cut to the width validation runs (100 → 96), with
    the line that says so; no upload leaves the request as it was."""
    from PIL import Image

    upload = tmp_path / "photo.jpg"
    Image.new("RGB", (384, 128), "orange").save(upload)
    request, _ = form_request({**FORM, "model_id": "someone/some-model"})
    attached, corrections = form_image(
        request, str(upload), default_model="x/y", uploads_dir=tmp_path / "uploads", max_bytes=10**6
    )
    assert Path(attached["image"]).parent == tmp_path / "uploads"
    assert corrections == ["image 384×128 → cropped and resized to 96×64"]
    assert form_image(request, None, default_model="x/y", uploads_dir=tmp_path, max_bytes=10**6) == (request, [])


def test_the_forms_image_is_refused_for_a_text_to_video_model(tmp_path: Path) -> None:
    """On the Wan text-to-video model an upload is refused naming ``image`` before it is read."""
    request, _ = form_request(FORM)
    with pytest.raises(InvalidParameterError) as caught:
        form_image(request, str(tmp_path / "any.png"), default_model="x/y", uploads_dir=tmp_path, max_bytes=10**6)
    assert caught.value.parameter == "image"
