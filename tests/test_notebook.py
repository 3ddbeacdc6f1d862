"""Notebook manners: results render as HTML with the video, the timeline and what we changed."""

from __future__ import annotations

import pytest

from components.notebook import NotebookResult, Studio
from components.service import GenerationService


@pytest.fixture(scope="module")
def studio(offline_service: GenerationService) -> Studio:
    """A studio around the session's started service (tests/conftest.py), not closed here: the session closes it."""
    return Studio(service=offline_service)


@pytest.fixture(scope="module")
def corrected(studio: Studio) -> NotebookResult:
    """A request whose frames and width had to be corrected."""
    return studio.generate("a boat", width=70, height=64, num_frames=6, steps=2, seed=1, progress=False)


def test_html_embeds_a_playable_video(corrected: NotebookResult) -> None:
    """The rich display carries the mp4 itself as a data URL in a <video> element."""
    page = corrected._repr_html_()
    assert "<video" in page and 'src="data:video/mp4;base64,' in page


def test_html_lists_what_we_changed(corrected: NotebookResult) -> None:
    """Each correction appears as an item of the changes list."""
    page = corrected._repr_html_()
    assert '<ul class="changes">' in page
    assert all(line.replace("→", "&rarr;") in page or line in page for line in corrected.result.corrections)


def test_html_shows_the_timeline_rows(corrected: NotebookResult) -> None:
    """The timeline (corrections, phases) is an ordered list in the display."""
    page = corrected._repr_html_()
    assert '<ol class="timeline">' in page and page.count("<li>") >= len(corrected.timeline)
    assert "Decoding frames" in page


def test_failure_renders_message_and_steps_without_raising(studio: Studio) -> None:
    """A failed request returns a result (not an exception) whose display shows the message and the steps."""
    failed = studio.generate("a boat", steps=0, progress=False)
    assert not failed.ok
    page = failed._repr_html_()
    assert "`steps`" in page and '<ul class="steps">' in page and "<video" not in page
