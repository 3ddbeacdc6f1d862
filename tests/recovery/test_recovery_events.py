"""Named events, frozen records, one thread-safe listener API, and the package's import hygiene."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading

import pytest

import recovery
from recovery import EventBus, events
from tests.support.spec import SPEC_ERROR_KEYS


def test_event_records_are_frozen() -> None:
    """A listener cannot change the record another listener sees."""
    event = EventBus().emit(events.GAVE_UP, "c", reason="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.data["reason"] = "y"  # type: ignore[index]


def test_failing_listener_does_not_stop_others() -> None:
    """A listener that raises is logged and the next one still hears the event."""
    bus, heard = EventBus(), []
    bus.subscribe(lambda event: 1 / 0)
    bus.subscribe(heard.append)
    bus.emit(events.RECOVERED, "c")
    assert len(heard) == 1


def test_unsubscribe_stops_delivery() -> None:
    """The function returned by subscribe removes the listener."""
    bus, heard = EventBus(), []
    unsubscribe = bus.subscribe(heard.append)
    unsubscribe()
    bus.emit(events.RECOVERED, "c")
    assert heard == []


def test_concurrent_emit_and_subscribe() -> None:
    """Emitting from many threads while subscribing loses no event for an early listener."""
    bus, heard = EventBus(), []
    bus.subscribe(heard.append)
    threads = [
        threading.Thread(target=lambda: [bus.emit(events.ATTEMPT_STARTED, "c") for _ in range(200)]) for _ in range(4)
    ] + [threading.Thread(target=lambda: [bus.subscribe(lambda e: None) for _ in range(200)])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(heard) == 800


def test_event_names_are_namespaced() -> None:
    """Every event constant is a distinct `recovery.*` name."""
    assert all(name.startswith("recovery.") for name in events.ALL_EVENTS) and len(events.ALL_EVENTS) == 13


def test_import_pulls_in_no_heavy_or_domain_modules() -> None:
    """Importing recovery loads neither components, gradio, diffusers, torch nor pandas."""
    code = (
        "import sys, recovery; print(sorted(m for m in ('components', 'gradio', 'diffusers', 'torch', "
        "'pandas', 'huggingface_hub') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_errors_pickle_with_their_data() -> None:
    """The new typed errors cross a process boundary with their data."""
    import pickle

    error = pickle.loads(pickle.dumps(recovery.StorageFullError("full", path="data", bytes_needed=9)))
    assert (type(error), error.bytes_needed, str(error)) == (recovery.StorageFullError, 9, "full")


def test_cancellation_is_a_generation_failure_with_the_cancelled_shape() -> None:
    """``RequestCancelledError`` is caught where a failed generation is, reports type ``cancelled`` in the spec's
    error keys with the plain message and no steps, and pickles with its data."""
    import pickle

    error = pickle.loads(
        pickle.dumps(recovery.RequestCancelledError(correlation_id="c1", phase="decode", steps_completed=4))
    )
    assert isinstance(error, recovery.GenerationFailedError)
    assert (error.correlation_id, error.phase, error.steps_completed) == ("c1", "decode", 4)
    report = error.report["error"]
    assert set(report) == set(SPEC_ERROR_KEYS)
    assert (report["type"], report["user_message"], report["actionable_steps"]) == (
        "cancelled",
        "You stopped this generation.",
        [],
    )
    assert "decode" in report["message"] and report["recovery_attempted"] is False


def test_limits_from_environment() -> None:
    """KINTSUGI_* variables set the engine limits."""
    limits = recovery.EngineLimits.from_env(
        {
            "KINTSUGI_MAX_RECOVERY_ATTEMPTS": "7",
            "KINTSUGI_RECOVERY_TIMEOUT_S": "30",
            "KINTSUGI_USER_INTERVENTION_THRESHOLD": "2",
        }
    )
    assert limits == recovery.EngineLimits(7, 30.0, 2)
