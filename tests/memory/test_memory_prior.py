"""Weight bytes read from safetensors headers (no weights loaded), and the planner's first physical correction
for a model it has never run."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from components.generation.embedded_model import EMBEDDED_MODEL_ID
from components.generation.families import FAMILIES
from components.generation.request import GenerationRequest, RunOptions
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


def test_the_service_gives_the_planner_a_cached_models_prior(tmp_path: Path) -> None:
    """A never-run tiny HunyuanVideo in the cache: planning it predicts from its prior, read from its folder."""
    from components.memory.prior import read_prior
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
        assert service.planner.prior_phases(request) is None
        service.plan_notice(request)
        phases = service.planner.prior_phases(request)
        prior = read_prior(settings.tiny_model_dir("kintsugi/tiny-hunyuan-random"))
        assert phases is not None and prior is not None
        assert service.planner.estimate(request) == phases["total"]
        assert phases["load"] > prior.total_weights  # the weights from its headers, and the process around them
    finally:
        service.close()


# -- the physical prior -----------------------------------------------------------------------------------------------
#: The published Wan 2.1 T2V 1.3B configs (transformer/config.json, vae/config.json of the Diffusers repo).
WAN21_13B = {
    "model_index.json": {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"]},
    "transformer/config.json": {
        "_class_name": "WanTransformer3DModel",
        "num_attention_heads": 12,
        "attention_head_dim": 128,
        "ffn_dim": 8960,
        "num_layers": 30,
        "patch_size": [1, 2, 2],
        "in_channels": 16,
        "out_channels": 16,
    },
    "vae/config.json": {
        "_class_name": "AutoencoderKLWan",
        "base_dim": 96,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "temperal_downsample": [False, True, True],
    },
}


def _configs_only(folder: Path, files: dict) -> Path:
    """A model folder of configs and no weights: enough for the prior's shapes (its weights then count 0)."""
    import json

    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content))
    return folder


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    """Every family's tiny model, built once for this module (the embedded one is the suite's)."""
    from components.generation.embedded_model import build_tiny_model
    from components.generation.families import FAMILIES

    root = tmp_path_factory.mktemp("families")
    return {
        family.name: tiny_model
        if family.tiny_model_id == EMBEDDED_MODEL_ID
        else build_tiny_model(family.tiny_model_id, root / family.name)
        for family in FAMILIES
    }


def test_the_prior_is_read_from_headers_and_configs_without_torch(tiny_model: Path) -> None:
    """Reading a prior imports no torch and loads no weight: it can run before a model is chosen."""
    import subprocess
    import sys

    code = (
        "import sys; from components.memory.prior import read_prior; "
        f"p = read_prior({str(tiny_model)!r}); "
        "print(p.transformer.layers, p.transformer.width, p.transformer.patch, p.vae.spatial, p.vae.temporal, "
        "'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.split() == ["4", "64", "(1,", "2,", "2)", "8", "4", "False"]


def test_the_prior_counts_the_weights_its_headers_give(tiny_model: Path) -> None:
    """The prior's weights are the headers' bytes in each component's run dtype (a VAE in fp32: four bytes)."""
    from components.memory.prior import read_prior

    prior = read_prior(tiny_model, 2, {"vae": 4})
    assert prior is not None and prior.vae_bytes == 4
    assert prior.weights == weight_bytes(tiny_model, 2, {"vae": 4})
    (file,) = (tiny_model / "transformer").glob("*.safetensors")
    assert prior.stored["transformer"] == file.stat().st_size  # the mapped file, as stored


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_every_family_gets_a_positive_prediction_growing_with_frames_and_pixels(family_folders, family) -> None:
    """For each family's folder: a positive peak in every phase, and more frames or more pixels need more."""
    from components.memory.calibration import prior_coefficients
    from components.memory.prior import read_prior

    prior = read_prior(family_folders[family])
    assert prior is not None
    coefficients = prior_coefficients("cpu")
    small, longer, wider = (prior.predict(f, s, s, coefficients) for f, s in ((9, 256), (17, 256), (9, 512)))
    assert all(value > 0 for value in small.values())
    assert longer["total"] > small["total"] and wider["total"] > small["total"]
    assert prior.latent_tokens(17, 256, 256) > prior.latent_tokens(9, 256, 256)


def test_a_folder_without_readable_configs_has_no_prior(tmp_path: Path) -> None:
    """No transformer config: no prior (the planner falls back to the weights alone)."""
    from components.memory.prior import read_prior

    folder = _configs_only(tmp_path, {"model_index.json": {"_class_name": "WanPipeline"}})
    assert read_prior(folder) is None


def test_tiling_shrinks_the_real_wan_decode_only_above_its_tile(tmp_path: Path) -> None:
    """The real Wan 2.1 VAE tiles at 256 px: tiling changes nothing at 256², and cuts the decode at 480×832."""
    from components.memory.calibration import prior_coefficients
    from components.memory.prior import read_prior

    prior = read_prior(_configs_only(tmp_path, WAN21_13B))
    assert prior is not None and prior.vae is not None and prior.vae.widths == (384, 384, 384, 192)
    c = prior_coefficients("cpu")
    assert prior.predict(9, 256, 256, c, vae_tiling=True) == prior.predict(9, 256, 256, c)
    plain, tiled = prior.predict(9, 832, 480, c)["decode"], prior.predict(9, 832, 480, c, vae_tiling=True)["decode"]
    assert tiled < plain


def test_attention_scores_count_only_where_the_backend_materialises_them(tmp_path: Path) -> None:
    """SDPA's fused kernels keep no tokens² scores; the math backend's do: heads × tokens² per batch."""
    from components.memory.prior import read_prior

    prior = read_prior(_configs_only(tmp_path, WAN21_13B))
    assert prior is not None
    tokens = prior.latent_tokens(81, 832, 480)
    assert tokens == 21 * 30 * 52
    assert prior.features(81, 832, 480, guidance_scale=1.0)["attention"] == 0
    assert (
        prior.features(81, 832, 480, guidance_scale=1.0, attention_materialised=True)["attention"] == 12 * tokens**2 * 2
    )


def test_model_offload_counts_only_the_running_models_weights(family_folders) -> None:
    """With model CPU offload (CUDA) the load holds no weights on the device, denoise the transformer's, decode
    the VAE's: each phase predicts less than with everything resident."""
    from components.memory.calibration import prior_coefficients
    from components.memory.prior import read_prior

    prior = read_prior(family_folders["wan2.1-t2v"])
    assert prior is not None
    c = prior_coefficients("cuda")
    resident, offloaded = prior.predict(9, 256, 256, c), prior.predict(9, 256, 256, c, model_cpu_offload=True)
    assert all(offloaded[phase] < resident[phase] for phase in ("load", "denoise", "decode"))


def _prior_of(folder: Path):
    from components.memory.prior import read_prior

    prior = read_prior(folder)
    assert prior is not None
    return prior


def test_the_planner_predicts_an_unmeasured_model_from_its_prior(family_folders) -> None:
    """A model never measured, with a prior: the planner's estimate is the prior's, not the borrowed fit."""
    model = "kintsugi/tiny-hunyuan-random"
    planner = MemoryPlanner(None, hardware="cpu")
    borrowed = planner.estimate(_request(model))
    planner.know_prior(model, _prior_of(family_folders["hunyuanvideo-t2v"]))
    phases = planner.prior_phases(_request(model))
    assert phases is not None and planner.estimate(_request(model)) == phases["total"] != borrowed


def test_measurements_take_over_from_the_prior(family_folders) -> None:
    """A measured point of a prior model is predicted as measured; with enough points its own fit replaces the
    prior."""
    from components.memory.calibration import Measurement

    model = "kintsugi/tiny-hunyuan-random"
    planner = MemoryPlanner(None, hardware="cpu", defaults=None)
    planner.know_prior(model, _prior_of(family_folders["hunyuanvideo-t2v"]))
    before = planner.estimate(_request(model))
    assert before is not None
    truth = 2 * before  # the model needs twice what its prior says at 17×256²
    planner.add_measurement(Measurement(model, 17, 256, 256, False, False, truth))
    assert planner.estimate(_request(model)) == pytest.approx(truth, rel=0.06)
    far = GenerationRequest(prompt="x", width=512, height=512, num_frames=9, model_id=model)
    moved = planner.estimate(far)
    assert moved is not None and moved > planner.prior_phases(far)["total"] * 1.3  # far sizes move by its bias
    for frames, side in ((9, 128), (9, 512), (33, 256), (33, 512)):
        mp = side * side / 1e6
        planner.add_measurement(Measurement(model, frames, side, side, False, False, int((100 + 400 * mp) * MiB)))
    own = planner.estimate(far)
    assert own == pytest.approx((100 + 400 * 0.262144) * MiB, rel=0.05)


def test_a_failure_under_a_cap_raises_a_prior_models_estimate() -> None:
    """The existing learning holds on a prior: a run that failed where the prior said it fits moves its estimate
    above that cap."""
    from components.memory.prior import ModelPrior, TransformerShape, VaeShape

    prior = ModelPrior(
        "WanPipeline",
        {"transformer": 10 * MiB},
        transformer=TransformerShape(layers=1, heads=2, head_dim=8, ffn=32, patch=(1, 2, 2)),
        vae=VaeShape("AutoencoderKLWan", 8, 4, (4, 4, 4, 4), chunk_latent_frames=1),
    )
    planner = MemoryPlanner(None, hardware="cpu", margin=0.0)
    planner.know_prior("x/y", prior)
    request = _request("x/y")
    cap = int(planner.estimate(request) * 1.5)  # type: ignore[operator]
    planner.record(request, RunOptions(), None, False, memory_cap=cap)
    assert planner.estimate(request) > cap  # type: ignore[operator]


def test_the_planner_takes_the_coefficients_it_is_given(family_folders) -> None:
    """``prior_coefficients`` replaces the hardware's: the bench plans with coefficients refitted without a model."""
    from components.memory.prior import PriorCoefficients

    model = "kintsugi/tiny-ltx-random"
    given = PriorCoefficients(fixed=2**30, loading=1.0, activations=1.0, output=1.0)
    planner = MemoryPlanner(None, hardware="cpu", prior_coefficients=given)
    planner.know_prior(model, _prior_of(family_folders["ltx"]))
    phases = planner.prior_phases(_request(model))
    assert phases is not None and 2**30 <= phases["load"] < 2**30 + 10 * MiB
