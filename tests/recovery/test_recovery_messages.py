"""User-facing text: a full catalogue, no paths, tokens or tracebacks, the API error shape."""

from __future__ import annotations

import re

import pytest

import recovery
from recovery import CATALOGUE, scrub
from recovery import EnhancedFailureType as F

SECRETS = re.compile(r"hf_[A-Za-z0-9]{6,}|Bearer (?!\[redacted\])\S|abc\.def|Traceback|/root|/home|/tmp|\.py\b")


@pytest.mark.parametrize("failure_type", list(F), ids=lambda f: f.value)
def test_catalogue_is_complete(failure_type: F) -> None:
    """Every failure type has a message, steps, options and an estimated resolution time."""
    guidance = CATALOGUE[failure_type]
    assert guidance.user_message and guidance.actionable_steps and guidance.alternative_options
    assert guidance.estimated_resolution_time.total_seconds() > 0


@pytest.mark.parametrize("failure_type", list(F), ids=lambda f: f.value)
def test_api_error_leaks_nothing(failure_type: F) -> None:
    """Even when the raw error holds a token, a path and a traceback, the user-facing JSON does not."""
    raw = (
        'Traceback (most recent call last):\n  File "/root/app/x.py", line 3, in f\nOSError: '
        "token=hf_abcdefghijklmnop Bearer abc.def at /root/.cache/huggingface/hub/models--x/blobs/1"
    )
    ctx = recovery.ErrorContext(failure_type, OSError(raw), recovery.ErrorSeverity.MEDIUM)
    text = str(recovery.api_error(ctx))
    assert not SECRETS.search(text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("token hf_AbCdEf123456 refused", "token [redacted] refused"),
        ("Authorization: Bearer eyJhbGciOi.x", "Authorization: Bearer [redacted]"),
        ("password=hunter2 given", "password=[redacted] given"),
        ("cannot open /root/.cache/x.safetensors", "cannot open [path]"),
        ("see https://huggingface.co/acme/video for access", "see https://huggingface.co/acme/video for access"),
        (
            'Traceback (most recent call last):\n  File "/a/b.py", line 1, in <module>\nValueError: bad',
            "ValueError: bad",
        ),
    ],
)
def test_scrub_removes_secrets_paths_tracebacks(raw: str, expected: str) -> None:
    """The scrubber redacts tokens, replaces paths, drops tracebacks and keeps URLs."""
    assert scrub(raw) == expected


def test_scrub_keeps_paths_inside_the_data_folder() -> None:
    """Paths in the app's own data folder may be shown."""
    assert scrub("saved /srv/kintsugi/data/out.mp4", data_dir="/srv/kintsugi/data") == (
        "saved /srv/kintsugi/data/out.mp4"
    )


@pytest.mark.parametrize(("minutes", "text"), [(5, "5 minutes"), (1, "1 minute"), (0.5, "30 seconds")])
def test_format_duration(minutes: float, text: str) -> None:
    """Estimated times read as plain words."""
    from datetime import timedelta

    assert recovery.format_duration(timedelta(minutes=minutes)) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(999, "999 B"), (1_234_567, "1.2 MiB"), (400 * 2**20, "400 MiB"), (2 * 2**30, "2.0 GiB"), (29e9, "27.0 GiB")],
)
def test_sizes_read_the_same_everywhere(count: float, text: str) -> None:
    """One byte formatter, binary units: memory lines and download sizes never mix MiB and MB."""
    assert recovery.format_bytes(count) == text


def test_an_unrecognised_error_is_told_as_such_not_as_a_pipeline_error() -> None:
    """The report says the error was not recognised (and names its class) instead of claiming a cause."""
    ctx = recovery.Classifier(probe=None).categorize(LookupError("frobnicator exploded"))
    error = recovery.api_error(ctx)["error"]
    assert "do not recognise" in error["user_message"] and set(error) == set(
        recovery.api_error(recovery.Classifier(probe=None).categorize(MemoryError()))["error"]
    ), "the spec's shape, no field more"
    assert "LookupError" in error["user_message"] and error["type"] == "generation_pipeline_error"


def test_a_repository_that_does_not_exist_says_check_the_id() -> None:
    """A 404 for a repository is a download failure for that model: "not found on the hub — check its id", never
    "the server cannot be reached"."""
    import httpx2
    from huggingface_hub.errors import RepositoryNotFoundError

    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/foo/bar"))
    missing = RepositoryNotFoundError("404 Client Error. Repository Not Found", response=response)
    ctx = recovery.Classifier(probe=None).categorize(missing, {"model_id": "foo/bar"})
    error = recovery.api_error(ctx)["error"]
    assert error["type"] == "model_download_failure"
    assert error["user_message"].startswith("foo/bar was not found on the model hub: check its id")
    assert "reach" not in error["user_message"]


def test_every_failure_type_and_strategy_has_a_plain_label() -> None:
    """Each of the 17 failure types and 7 strategies has its own words, and none is its technical name."""
    from recovery.messages import FAILURE_LABELS, STRATEGY_LABELS, failure_label, strategy_label
    from recovery.taxonomy import RecoveryStrategy

    assert set(FAILURE_LABELS) == set(F) and set(STRATEGY_LABELS) == set(RecoveryStrategy)
    labels = [failure_label(f) for f in F] + [strategy_label(s) for s in RecoveryStrategy]
    assert len(set(labels)) == len(labels) and all("_" not in label for label in labels)


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("vram_exhaustion", "Not enough memory"),
        ("parameter_adjustment", "Adjusted the settings"),
        ("odd_new", "Odd new"),
    ],
)
def test_labels_take_the_value_an_event_carries(value: str, label: str) -> None:
    """Events carry the enum's value; an unknown value is shown as words, not dropped."""
    from recovery.messages import failure_label, strategy_label

    assert label in (failure_label(value), strategy_label(value))
