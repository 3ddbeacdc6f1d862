"""Fallback only with consent: a model the user named is never silently replaced; a fallback says so, naming both.
A fallback really runs: across families (a CogVideoX model that cannot be fetched → the built-in Wan, made by the Wan
pipeline), and as the memory ladder's last rung (a model that fits nowhere → its catalogued smaller sibling)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.families import family_of_folder
from components.http_api import request_status_json
from components.service import GenerationService
from components.settings import Settings
from components.store.catalog import ENTRIES, CatalogEntry, Task
from components.store.download import RetryPolicy
from components.store.model_store import ModelStore
from components.views.reports import ALLOW_FALLBACK_STEP, ServiceEvent
from recovery import events, guidance_for
from recovery.errors import GenerationFailedError
from recovery.taxonomy import EnhancedFailureType
from tests.support.app_process import free_port

REQUEST = {"prompt": "a paper boat", "width": 64, "height": 64, "num_frames": 5, "steps": 2, "seed": 3}
NAMED = "foo/bar"
COGVIDEOX = "THUDM/CogVideoX-2b"
BIG = "kintsugi-test/wan-big"  # a Wan whose transformer alone is larger than the capped worker's memory
CAP = 340 * 2**20


def catalogued(*model_ids: str) -> tuple[CatalogEntry, ...]:
    return tuple(entry for entry in ENTRIES if entry.model_id in model_ids)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    """No network (the hub is a closed loopback port); the catalogue holds CogVideoX-2b and the built-in Wan only
    (installed): a hub model cannot be reached, nothing of CogVideoX's family runs here, the built-in Wan could
    stand in."""
    data_dir = tmp_path_factory.mktemp("fallback")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu")
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    store = ModelStore(
        settings.hub_cache_dir,
        settings.store_state_dir,
        endpoint=f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1),
        catalog=catalogued(COGVIDEOX, EMBEDDED_MODEL_ID),
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


def test_a_model_that_cannot_be_fetched_falls_back_across_families(service: GenerationService) -> None:
    """CogVideoX-2b (catalogued, family ``cogvideox``) cannot be fetched offline; with consent the built-in Wan of
    another family stands in: the result names both, and the video is the Wan pipeline's, at the size asked."""
    asked = {**REQUEST, "num_frames": 9, "model_id": COGVIDEOX, "allow_fallback": True}
    stream = list(service.generate(asked))
    result = stream[-1].data["result"]
    assert (result.fallback_from, result.fallback_to) == (COGVIDEOX, EMBEDDED_MODEL_ID) and result.changed
    switched = [e.data for e in stream if e.kind == "recovery" and e.message == events.MODEL_SWITCHED]
    assert [(data["old"], data["new"]) for data in switched] == [(COGVIDEOX, EMBEDDED_MODEL_ID)]
    made_by = family_of_folder(service.store.ensure(result.output.model_id), result.output.model_id)
    asked_family = service.store.fallbacks.entry(COGVIDEOX)
    assert asked_family is not None and asked_family.family == "cogvideox" != made_by.name
    assert (made_by.name, made_by.pipeline_class) == ("wan2.1-t2v", "WanPipeline")
    assert (result.output.frames, result.output.width, result.output.height) == (9, 64, 64)
    assert Path(result.video_path).is_file()


def test_without_consent_the_unreachable_model_is_refused_with_its_own_message(service: GenerationService) -> None:
    """The same request without consent: no switch, no video; the report is the catalogued one for the failure of
    CogVideoX-2b (an unreachable hub), with the step that allowing another model would let it run."""
    seen, failure = _events_until_failure(service.generate({**REQUEST, "num_frames": 9, "model_id": COGVIDEOX}))
    assert not any(e.kind == "result" or e.message == events.MODEL_SWITCHED for e in seen)
    error = failure.report["error"]
    assert error["type"] == EnhancedFailureType.NETWORK_CONNECTIVITY_LOSS.value
    assert error["user_message"].startswith(guidance_for(EnhancedFailureType.NETWORK_CONNECTIVITY_LOSS).user_message)
    assert error["actionable_steps"][-1] == ALLOW_FALLBACK_STEP


def _build_big_wan(target: Path) -> Path:
    """The tiny Wan with a 256 MiB transformer (zeros: its weights never run) — loading it needs more than CAP."""
    import torch
    from diffusers import WanTransformer3DModel

    from components.generation.families.wan import TRANSFORMER_CONFIG, build_tiny_wan

    pipe = build_tiny_wan()
    with torch.device("meta"):
        big = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "ffn_dim": 131072})
    big = big.to_empty(device="cpu").eval()
    for tensor in (*big.parameters(), *big.buffers()):
        tensor.data.zero_()
    pipe.transformer = big
    pipe.save_pretrained(target, safe_serialization=True)
    return target


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[GenerationService]:
    """A worker capped at 340 MiB; the catalogue knows the big Wan, whose smaller sibling is the built-in one."""
    data_dir = tmp_path_factory.mktemp("smaller-model")
    settings = Settings(data_dir=data_dir, hub_cache_dir=data_dir / "hub", device="cpu", worker_memory_cap=CAP)
    shutil.copytree(tiny_model, settings.embedded_model_dir)
    big = CatalogEntry(BIG, "wan2.1-t2v", (Task.TEXT_TO_VIDEO,), 0.07, 0.27, None, None, 1, smaller=EMBEDDED_MODEL_ID)
    store = ModelStore(
        settings.hub_cache_dir,
        settings.store_state_dir,
        endpoint=f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1),
        catalog=(big, *catalogued(EMBEDDED_MODEL_ID)),
    )
    store.register_local_source(BIG, _build_big_wan)
    with GenerationService(settings, store=store) as started:
        yield started


def test_a_model_that_fits_nowhere_runs_as_its_smaller_sibling_with_consent(capped: GenerationService) -> None:
    """The big Wan runs out of memory loading, and no lower setting is predicted to fit: with consent the ladder's
    last rung runs the request on its catalogued smaller sibling, marked like a fallback (both models named)."""
    result = capped.generate_video({**REQUEST, "model_id": BIG, "allow_fallback": True})
    assert (result.fallback_from, result.fallback_to) == (BIG, EMBEDDED_MODEL_ID)
    assert result.changed and result.degraded and result.request.model_id == EMBEDDED_MODEL_ID
    assert any(line.startswith(f"model {BIG} → {EMBEDDED_MODEL_ID} (its smaller sibling") for line in result.changes)
    assert any(BIG in note and EMBEDDED_MODEL_ID in note for note in result.notes)
    assert result.output.frames == REQUEST["num_frames"] and Path(result.video_path).is_file()
