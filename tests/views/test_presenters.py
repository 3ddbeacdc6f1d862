"""Timeline lines and the metrics headline as the web app and notebooks show them."""

from __future__ import annotations

from components.views.presenters import summary_markdown, timeline_line
from components.views.reports import ServiceEvent


def test_a_request_waiting_for_a_running_download_says_so() -> None:
    """The store's download.waiting event becomes a line naming the model."""
    event = ServiceEvent("download", "download.waiting", {"model_id": "owner/model", "bytes_done": 0})
    assert timeline_line(event) == "- Waiting for the download of owner/model that is already running"


def test_plan_lines_are_labelled_by_what_they_plan() -> None:
    """A memory plan is labelled as such; a speed-up left off is a plain plan line."""
    memory = ServiceEvent("plan", "planned before running: num_frames 33 → 17 to fit in 340 MiB", {})
    left_off = ServiceEvent("plan", "torch.compile left off: it failed on this machine earlier (no compiler)", {})
    assert timeline_line(memory) == "- **Memory plan**: num_frames 33 → 17 to fit in 340 MiB"
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


def test_summary_headline_says_how_long_recovery_took() -> None:
    """The headline counts the requests that ran and gives the mean failure-to-video time, rounded."""
    assert summary_markdown(SUMMARY) == (
        "**4 requests ran** · 75% ended with a video · 1 rescued by recovery (50% of those that hit a failure; "
        "1 min 3 s from failure to video on average) · 1 failed · 0% degraded · mean attempts 1.50"
    )


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
