"""Through the whole service, under a real worker memory cap: an over-budget request still yields a video, marked
changed; the plan notice tells the user before it runs, with the choices."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.service import GenerationService
from components.settings import Settings
from recovery.errors import GenerationCancelledError, GenerationFailedError

CAP = 340 * 2**20
OVER_BUDGET = {"prompt": "a lantern", "width": 512, "height": 512, "num_frames": 33, "steps": 2, "seed": 4}


@pytest.fixture(scope="module")
def capped_service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    data_dir = tmp_path_factory.mktemp("capped")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu", worker_memory_cap=CAP)
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    with GenerationService(settings) as started:
        yield started


def test_over_budget_request_yields_a_smaller_video_with_changes_listed(capped_service: GenerationService) -> None:
    """33×512² does not fit in 340 MiB: the service plans or adjusts it down, makes a real video, and lists each
    change; the run is recorded with the quality kept below 1."""
    stream = list(capped_service.generate(OVER_BUDGET))
    result = stream[-1].data["result"]
    asked, made = 512 * 512 * 33, result.request.width * result.request.height * result.request.num_frames
    assert Path(result.video_path).is_file()
    assert result.changes, "every change must be listed"
    assert made <= asked
    assert result.attempts <= 2
    assert result.changed and any(note.startswith("Not the video you asked for") for note in result.notes)
    quality = capped_service.metrics._db.execute(
        "SELECT quality_kept FROM runs WHERE correlation_id = ?", (result.correlation_id,)
    ).fetchone()[0]
    assert quality == pytest.approx(made / asked)


def test_the_plan_notice_offers_choices_with_predicted_memory_and_time(capped_service: GenerationService) -> None:
    """Before running: no notice for a request that fits; for one that does not, fewer frames (full size), lower
    resolution (all frames), run anyway and cancel, with the planner's memory and, once a run taught the time
    model, a predicted time for each that runs."""
    small = {**OVER_BUDGET, "width": 64, "height": 64, "num_frames": 5}
    assert capped_service.plan_notice(small) is None
    capped_service.generate_video(small)  # teaches the time model
    notice = capped_service.plan_notice(OVER_BUDGET)
    assert notice is not None and notice.budget_bytes == CAP
    options = {option.choice: option for option in notice.choices}
    assert list(options) == ["fewer_frames", "lower_resolution", "run_anyway", "cancel"]
    assert options["fewer_frames"].request.width == 512 and options["fewer_frames"].request.num_frames < 33
    assert options["lower_resolution"].request.num_frames == 33 and options["lower_resolution"].request.width < 512
    assert not options["run_anyway"].fits and options["run_anyway"].memory_bytes > CAP
    for name in ("fewer_frames", "lower_resolution", "run_anyway"):
        assert options[name].memory_bytes and options[name].time_s and options[name].time_s > 0


def test_the_users_plan_choice_runs_and_is_marked_changed(capped_service: GenerationService) -> None:
    """``plan_choice="fewer_frames"``: the run starts with fewer frames, the changes say it was the user's choice,
    and the result is marked changed with a line naming what changed. (The choice is the most frames predicted to
    fit; should the prediction be short, recovery lowers it further, as for any request.)"""
    stream = list(capped_service.generate(OVER_BUDGET, plan_choice="fewer_frames"))
    result = stream[-1].data["result"]
    assert result.request.num_frames < 33
    assert any("your choice: fewer_frames" in line and "num_frames 33 →" in line for line in result.changes)
    assert result.changed and any("33 frames at 512×512 →" in note for note in result.notes)


def test_an_unknown_plan_choice_is_refused_naming_it(capped_service: GenerationService) -> None:
    """A choice that is not one of the notice's ends before anything runs, with a report naming ``plan_choice``."""
    with pytest.raises(GenerationFailedError) as caught:
        list(capped_service.generate(OVER_BUDGET, plan_choice="smaller please"))
    error = caught.value.report["error"]
    assert error["type"] == "invalid_parameters" and "`plan_choice`" in error["message"]


def test_cancel_at_the_plan_notice_runs_and_journals_nothing(capped_service: GenerationService) -> None:
    """``plan_choice="cancel"``: nothing runs and nothing is journaled."""
    before = capped_service.metrics.count_runs()
    with pytest.raises(GenerationCancelledError):
        list(capped_service.generate(OVER_BUDGET, plan_choice="cancel", correlation_id="cancelled-at-notice"))
    assert capped_service.request_status("cancelled-at-notice") is None
    assert capped_service.metrics.count_runs() == before
