"""Timeline lines and the metrics headline as the web app and notebooks show them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from components.views.presenters import (
    PhaseBoard,
    change_banner,
    failure_html,
    failure_markdown,
    form_words,
    result_markdown,
    summary_markdown,
    timeline_line,
)
from components.views.reports import GenerationResult, ServiceEvent
from recovery import events
from recovery.outcome import AttemptRecord
from recovery.taxonomy import EnhancedFailureType


def test_a_request_waiting_for_a_running_download_says_so() -> None:
    """The store's download.waiting event becomes a line naming the model."""
    event = ServiceEvent("download", "download.waiting", {"model_id": "owner/model", "bytes_done": 0})
    assert timeline_line(event) == "- Waiting for the download of owner/model that is already running"


def test_plan_lines_are_labelled_by_what_they_plan() -> None:
    """A memory plan is labelled as such; a speed-up left off is a plain plan line."""
    memory = ServiceEvent("plan", "planned before running: num_frames 33 → 17 to fit in 340 MiB", {})
    left_off = ServiceEvent("plan", "torch.compile left off: it failed on this machine earlier (no compiler)", {})
    assert timeline_line(memory) == "- **Memory plan**: Frames 33 → 17 to fit in 340 MiB"
    assert timeline_line(left_off) == (
        "- **Plan**: torch.compile left off: it failed on this machine earlier (no compiler)"
    )


SUMMARY = {
    "requests": 4,
    "succeeded": 3,
    "recovered": 1,
    "failed": 1,
    "refused": 0,
    "success_share": 0.75,
    "recovered_share": 0.25,
    "rescue_share": 0.5,
    "degraded_share": 0.0,
    "mean_attempts": 1.5,
    "mean_recovery_s": 63.2,
}


def test_a_plan_the_user_chose_at_the_notice_says_so() -> None:
    """The answer to the plan notice is a memory plan line saying it was the user's choice, in form words."""
    chosen = ServiceEvent("plan", "planned before running (your choice: fewer_frames): num_frames 33 → 5", {})
    assert timeline_line(chosen) == "- **Memory plan** (your choice at the memory notice): Frames 33 → 5"


def test_summary_headline_says_how_long_recovery_took() -> None:
    """The headline counts the requests that ran and gives the mean failure-to-video time, rounded."""
    assert summary_markdown(SUMMARY) == (
        "**4 requests ran** · 75% ended with a video · 1 rescued by recovery (50% of those that hit a failure; "
        "1 min 3 s from failure to video on average) · 1 failed · 0% degraded · mean attempts 1.50"
    )


def test_summary_headline_says_one_request_in_the_singular() -> None:
    """One request ran: "1 request ran", not "1 requests"."""
    one = {**SUMMARY, "requests": 1, "succeeded": 1, "recovered": 0, "failed": 0}
    assert summary_markdown(one).startswith("**1 request ran** · ")


def test_summary_headline_counts_refused_requests_apart() -> None:
    """Refused requests are named as such after the other counts, and not as failures."""
    text = summary_markdown({**SUMMARY, "refused": 2})
    assert text.endswith(" · 2 refused before running (invalid input, not counted as failed)")
    assert " · 1 failed · " in text


def test_summary_headline_with_only_refused_requests() -> None:
    """When nothing ran but requests were refused, the headline says both."""
    empty = {**SUMMARY, "requests": 0, "succeeded": 0, "recovered": 0, "failed": 0, "refused": 1}
    assert summary_markdown(empty) == (
        "**No requests have run yet** · 1 refused before running (invalid input, not counted as failed)"
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("`num_frames` must be 4k+1 (got 16)", "Frames must be 4k+1 (got 16)"),
        ("width 100 → 96 (Wan needs sides divisible by 16)", "Width 100 → 96 (Wan needs sides divisible by 16)"),
        ("num_frames 33 → 17; vae_tiling off → on", "Frames 33 → 17; VAE tiling off → on"),
        (
            "seed chosen at random: 5 (reuse it to get the same video)",
            "Seed chosen at random: 5 (reuse it to get the same video)",
        ),
        ("Use fewer steps or a smaller size", "Use fewer steps or a smaller size"),
    ],
)
def test_page_messages_use_the_forms_labels(text: str, shown: str) -> None:
    """Parameter names become the form's labels where they name a parameter; ordinary words stay."""
    assert form_words(text) == shown


def test_a_failed_attempt_reads_in_plain_words_with_the_type_in_details() -> None:
    """ "vram_exhaustion" is "Not enough memory" on the page, the technical name on a details line."""
    event = ServiceEvent(
        "recovery", events.FAILURE_CLASSIFIED, {"attempt": 1, "failure_type": "vram_exhaustion", "severity": "medium"}
    )
    line = timeline_line(event)
    assert line is not None and line.startswith("- **Attempt 1 failed**: Not enough memory  \n  _details: ")
    assert "vram_exhaustion" in line.splitlines()[1]


def test_a_strategy_reads_as_what_it_did() -> None:
    """A strategy's line says what it did in words, its name on the details line."""
    event = ServiceEvent("recovery", events.STRATEGY_FINISHED, {"strategy": "parameter_adjustment", "success": True})
    assert timeline_line(event) == ("- **Adjusted the settings**: worked  \n  _details: parameter_adjustment_")


def _result(*durations: float) -> GenerationResult:
    request = GenerationRequest("a boat", width=64, height=64, num_frames=5, steps=2, seed=3)
    output = GenerationOutput(
        "/x/v.mp4",
        request,
        RunOptions(),
        {"denoise": 50.0, "export": 12.3},
        None,
        "cpu",
        "bfloat16",
        5,
        64,
        64,
        "0" * 64,
        2,
    )
    records = tuple(
        AttemptRecord(
            number, {}, None, seconds, EnhancedFailureType.VRAM_EXHAUSTION if number < len(durations) else None
        )
        for number, seconds in enumerate(durations, 1)
    )
    return GenerationResult(
        output.video_path, request, ("width 70 → 64",), (), False, len(durations), "id", output, attempt_records=records
    )


def test_result_time_is_the_whole_request_and_each_attempt() -> None:
    """A recovered request reports its whole time and every attempt's, not only the last attempt's work."""
    text = result_markdown(_result(119.7, 62.3), elapsed_s=182.0)
    assert "in 3 min 2 s" in text and "in 62.3 s" not in text
    assert "attempt 1: 119.7 s (Not enough memory) · attempt 2: 62.3 s" in text
    assert "- Width 70 → 64" in text


def test_an_invalid_setting_is_refused_without_claiming_corrections() -> None:
    """An empty prompt's report names the Prompt field and never says "we corrected what we could"."""
    report = {
        "error": {
            "type": "invalid_parameters",
            "user_message": "Some settings are not valid. We corrected what we could and said what we changed.",
            "message": "`prompt` must not be empty (got '')",
            "actionable_steps": ["Check the highlighted settings"],
        }
    }
    for text in (failure_markdown(report), failure_html(report)):
        assert "Prompt must not be empty" in text and "corrected what we could" not in text
    assert "**" not in failure_html(report) and "<strong>" in failure_html(report)
    assert "A setting that is not valid · details: invalid_parameters" in failure_html(report)


def test_phase_board_shows_a_bar_per_phase_and_the_steps_pace_as_eta() -> None:
    """Without an ETA from the service, two denoising steps a second apart predict the rest of the phase."""
    now = [0.0]
    board = PhaseBoard("req1", clock=lambda: now[0])
    board.update(ServiceEvent("phase", "load", {"phase": "load", "attempt": 1}))
    board.update(ServiceEvent("phase", "denoise", {"phase": "denoise", "attempt": 1}))
    for step in (1, 2):
        now[0] += 1.0
        board.update(ServiceEvent("progress", f"step {step}/10", {"step": step, "total": 10, "attempt": 1}))
    html = board.html()
    assert html.count("<progress") == 4 and 'aria-label="Loading the model" value="1.000"' in html
    assert 'aria-label="Denoising" value="0.200"' in html and "step 2/10" in html
    assert "denoising: 8.0 s" in html and "req1" in html


def test_phase_board_prefers_the_services_eta() -> None:
    """``eta_s`` and ``phase_eta_s`` in an event's data are shown as sent; a decode progress moves its own bar."""
    board = PhaseBoard("r")
    board.update(ServiceEvent("phase", "denoise", {"phase": "denoise", "eta_s": 30.0, "phase_eta_s": 20.0}))
    board.update(
        ServiceEvent("progress", "", {"step": 1, "total": 4, "phase": "decode", "eta_s": 5.0, "phase_eta_s": 4.0})
    )
    html = board.html()
    assert "about 5.0 s left" in html and "decoding frames: 4.0 s" in html
    assert 'aria-label="Decoding frames" value="0.250"' in html and 'aria-label="Denoising" value="1.000"' in html


FALLBACK_NOTE = (
    "Made with kintsugi/tiny-wan-random instead of foo/bar (another model was allowed): The model server cannot be "
    "reached."
)
LOWERED_NOTE = (
    "Not the video you asked for: memory planning changed it before it ran (33 frames at 512×512 → 5 frames at "
    "512×512) — see the changes."
)


def test_a_fallback_banner_names_both_models_above_the_details() -> None:
    """Another model made the video: "Made with X instead of Y" comes first, with why; the note is not repeated
    below, and it is not called a degraded preview."""
    result = replace(
        _result(1.0),
        changed=True,
        fallback_from="foo/bar",
        fallback_to="kintsugi/tiny-wan-random",
        notes=(FALLBACK_NOTE,),
    )
    text = result_markdown(result)
    assert text.startswith("> ### Made with kintsugi/tiny-wan-random instead of foo/bar")
    assert "The model server cannot be reached" in text.split("frames ·")[0]
    assert text.count("instead of foo/bar") == 1 and "Degraded" not in text


def test_a_planned_down_result_says_what_changed_above_the_details() -> None:
    """Frames lowered before the run: a "Changed result" banner with from → to, before the video's details."""
    text = result_markdown(replace(_result(1.0), changed=True, notes=(LOWERED_NOTE,)))
    banner, details = text.split("**5 frames", 1)
    assert "**Changed result**" in banner and "33 frames at 512×512 → 5 frames at 512×512" in banner
    assert "Not the video you asked for" not in details and "Degraded" not in text


def test_a_result_as_asked_has_no_change_banner() -> None:
    """Nothing changed: no banner, the notes (e.g. the built-in model's) stay below the details."""
    result = replace(_result(1.0), notes=("Made with the built-in tiny model: its weights are random.",))
    assert change_banner(result) is None
    assert result_markdown(result).endswith("_Made with the built-in tiny model: its weights are random._")
