"""Fallback only with consent: a model the user named is never silently replaced; a fallback says so, naming both."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.http_api import request_status_json
from components.service import GenerationService
from components.settings import Settings
from components.store.download import RetryPolicy
from components.store.model_store import ModelStore
from components.views.reports import ALLOW_FALLBACK_STEP, ServiceEvent
from recovery import events
from recovery.errors import GenerationFailedError
from tests.support.app_process import free_port

REQUEST = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 3}
NAMED = "foo/bar"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    """No network (the hub is a closed loopback port), the built-in model installed and in the catalogue: a hub
    model cannot be reached, and the built-in one could stand in."""
    data_dir = tmp_path_factory.mktemp("fallback")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    store = ModelStore(
        settings.hub_cache_dir,
        settings.store_state_dir,
        endpoint=f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1),
    )
    with GenerationService(settings, store=store) as started:
        yield started


def _events_until_failure(stream: Iterator[ServiceEvent]) -> tuple[list[ServiceEvent], GenerationFailedError]:
    seen: list[ServiceEvent] = []
    with pytest.raises(GenerationFailedError) as caught:
        for event in stream:
            seen.append(event)
    return seen, caught.value


def test_a_named_model_that_cannot_be_reached_fails_with_its_own_message(service: GenerationService) -> None:
    """``foo/bar`` with no network and no consent: no video, no model switch; the report is the catalogued one for
    that failure, with a step saying that allowing another model would let it run."""
    seen, failure = _events_until_failure(service.generate({**REQUEST, "model_id": NAMED}))
    assert not any(e.kind == "result" for e in seen)
    assert not any(e.kind == "recovery" and e.message == events.MODEL_SWITCHED for e in seen)
    error = failure.report["error"]
    assert error["type"] == "network_connectivity_loss"
    assert error["user_message"].startswith("The model server cannot be reached")
    assert error["actionable_steps"][-1] == ALLOW_FALLBACK_STEP


def test_with_consent_the_fallback_result_names_both_models(service: GenerationService) -> None:
    """``allow_fallback=True``: the built-in model stands in; the result is marked changed, says which model it was
    made with instead of which (fields, ``to_dict`` and a note)."""
    result = service.generate_video({**REQUEST, "model_id": NAMED, "allow_fallback": True})
    assert (result.fallback_from, result.fallback_to) == (NAMED, EMBEDDED_MODEL_ID)
    assert result.changed and result.request.model_id == EMBEDDED_MODEL_ID
    data = result.to_dict()
    assert (data["fallback_from"], data["fallback_to"], data["changed"]) == (NAMED, EMBEDDED_MODEL_ID, True)
    assert any(NAMED in note and EMBEDDED_MODEL_ID in note for note in result.notes)
    assert "/" not in data["video"]


def test_the_default_model_may_fall_back_unless_refused(
    service: GenerationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request on the configured default model (``KINTSUGI_MODEL``) may fall back by default; the same request
    with ``allow_fallback=False`` fails instead."""
    monkeypatch.setattr(service, "settings", replace(service.settings, model="nobody/default-model"))
    result = service.generate_video(REQUEST)
    assert (result.fallback_from, result.fallback_to) == ("nobody/default-model", EMBEDDED_MODEL_ID)
    with pytest.raises(GenerationFailedError):
        service.generate_video({**REQUEST, "allow_fallback": False})


def test_a_result_on_the_asked_model_is_not_changed(service: GenerationService) -> None:
    """The built-in model asked for and made: no fallback fields, not changed."""
    result = service.generate_video(REQUEST)
    assert (result.fallback_from, result.fallback_to, result.changed) == (None, None, False)


def test_the_journal_keeps_which_model_stood_in(service: GenerationService) -> None:
    """A completed fallback is filed with ``changed`` and both models, so ``GET /api/v1/requests/{id}`` can say so
    after the caller has gone (or the app restarted)."""
    result = service.generate_video({**REQUEST, "model_id": NAMED, "allow_fallback": True})
    entry = service.request_status(result.correlation_id)
    assert entry is not None and entry.result is not None
    assert (entry.result["changed"], entry.result["fallback_from"], entry.result["fallback_to"]) == (
        True,
        NAMED,
        EMBEDDED_MODEL_ID,
    )
    status = request_status_json(entry)
    assert status["changed"] is True and status["fallback"] == {"from_model": NAMED, "to_model": EMBEDDED_MODEL_ID}
