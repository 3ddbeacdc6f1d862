"""Weight bytes read from safetensors headers (no weights loaded), and the planner's first physical correction
for a model it has never run."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.request import GenerationRequest
from components.memory.planner import MemoryPlanner
from components.memory.prior import safetensors_header, weight_bytes

MiB = 2**20


def test_weight_bytes_match_the_loaded_tensors_in_the_run_dtype(tiny_model: Path) -> None:
    from safetensors.torch import load_file

    sizes = weight_bytes(tiny_model, dtype_bytes=2, component_dtype_bytes={"vae": 4})
    assert set(sizes) == {"transformer", "vae", "text_encoder"}
    for component, width in (("transformer", 2), ("vae", 4)):
        (file,) = (tiny_model / component).glob("*.safetensors")
        loaded = load_file(file)
        assert sizes[component] == sum(t.numel() * width for t in loaded.values() if t.is_floating_point())


def test_a_header_with_an_impossible_length_is_refused_not_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ValueError, match="over the format's limit"):
        safetensors_header(bad)


def _request(model_id: str) -> GenerationRequest:
    return GenerationRequest(prompt="x", width=256, height=256, num_frames=17, model_id=model_id)


def test_a_never_run_model_is_predicted_with_its_extra_weights() -> None:
    planner = MemoryPlanner(None)
    borrowed = planner.estimate(_request("someone/bigger"))
    planner.know_weights(EMBEDDED_MODEL_ID, 2 * MiB)
    planner.know_weights("someone/bigger", 902 * MiB)
    corrected = planner.estimate(_request("someone/bigger"))
    assert borrowed is not None and corrected is not None
    assert corrected - borrowed == pytest.approx(900 * MiB, abs=1)
    assert planner.estimate(_request(EMBEDDED_MODEL_ID)) == borrowed


def test_weights_do_not_shift_a_model_measured_here(make_planner) -> None:
    """A model with its own measurements is predicted from them: the weight correction is only for a borrowed fit."""
    planner = make_planner(hardware="cpu")
    before = planner.estimate(_request("test/model"))
    planner.know_weights("test/model", 900 * MiB)
    assert planner.estimate(_request("test/model")) == before


def test_the_service_tells_the_planner_a_cached_models_weights(tmp_path: Path) -> None:
    """A never-run tiny HunyuanVideo in the cache: planning it adds its weights' difference to the borrowed fit."""
    from components.service import GenerationService
    from components.settings import Settings

    settings = Settings(data_dir=tmp_path, hub_cache_dir=tmp_path / "hub", device="cpu", dtype="bfloat16")
    service = GenerationService(settings)
    try:
        service.store.ensure(EMBEDDED_MODEL_ID)
        service.store.ensure("kintsugi/tiny-hunyuan-random")
        request = GenerationRequest(
            prompt="x", width=64, height=64, num_frames=9, model_id="kintsugi/tiny-hunyuan-random"
        )
        borrowed = service.planner.estimate(request)
        service.plan_notice(request)
        folder = settings.tiny_model_dir("kintsugi/tiny-hunyuan-random")
        extra = sum(weight_bytes(folder).values()) - sum(weight_bytes(settings.embedded_model_dir).values())
        assert borrowed is not None and service.planner.estimate(request) - borrowed == pytest.approx(extra, abs=1)
    finally:
        service.close()
