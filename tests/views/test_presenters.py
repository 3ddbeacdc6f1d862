"""Timeline lines as the web app and notebooks show them."""

from __future__ import annotations

from components.views.presenters import timeline_line
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
