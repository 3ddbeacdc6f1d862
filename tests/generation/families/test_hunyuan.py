"""HunyuanVideo: frames corrected by us before the pipeline floors them, its folders recognised, the tiny model built
deterministically with tokenizers that reload unchanged, the prompt template chosen by the tokenizer, the decoder
calls counted, and a video through the service."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import pytest

from components.generation.embedded_model import (
    build_tiny_model,
    char_clip_tokenizer,
    char_llama_tokenizer,
    read_manifest,
)
from components.generation.families import family_for_model_id, family_of_folder, rules_for_model
from components.generation.families.hunyuan import (
    TINY_HUNYUAN_ID,
    TINY_PROMPT_TEMPLATE,
    HunyuanVideoTextToVideo,
    hunyuan_decoder_chunks,
    prompt_template_for,
)
from components.generation.pipeline import VideoGenerator
from components.generation.request import GenerationRequest, validate_request
from components.service import GenerationService
from components.views.reports import ServiceEvent
from recovery.errors import ModelCompatibilityError

TEXT = "A paper boat, drifting: 3 gulls & rain (é)"


@pytest.fixture(scope="module")
def folder(tiny_family_model: Callable[[str], Path]) -> Path:
    return tiny_family_model(TINY_HUNYUAN_ID)


@pytest.fixture(scope="module")
def pipe(folder: Path) -> Any:
    import torch

    return HunyuanVideoTextToVideo().load(folder, torch.float32)


def _llama_embeddings(pipe: Any, prompt: str, template: dict[str, Any] | None = None) -> Any:
    """The prompt's Llama embeddings as the pipeline makes them (its default template when ``template`` is None)."""
    import torch

    with torch.no_grad():
        if template is None:
            return pipe.encode_prompt(prompt=prompt, device="cpu")[0]
        return pipe.encode_prompt(prompt=prompt, prompt_template=template, device="cpu")[0]


def _mp4_frames(path: Path) -> list[Any]:
    reader: Any = imageio.get_reader(path, format="FFMPEG")
    with reader:
        return list(reader.iter_data())


# -- frames ---------------------------------------------------------------------------------------------------------
def test_the_pipeline_itself_floors_a_frame_count_silently(pipe: Any) -> None:
    """The trap the rule guards: 10 frames asked, 9 returned, no error."""
    import torch

    video = pipe(
        prompt="x",
        height=64,
        width=64,
        num_frames=10,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        prompt_template=TINY_PROMPT_TEMPLATE,
    ).frames
    assert video.shape[1] == 9


def test_a_frame_count_off_4k_plus_1_is_corrected_first_with_a_report_and_runs_as_corrected(
    folder: Path, tmp_path: Path
) -> None:
    """We bring 10 frames to 4k+1 before running, say so naming HunyuanVideo, and the mp4 has that many."""
    checked, corrections = validate_request(
        GenerationRequest(prompt="a paper boat", width=64, height=64, num_frames=10, steps=1, model_id=TINY_HUNYUAN_ID)
    )
    assert corrections == [f"num_frames 10 → {checked.num_frames} (HunyuanVideo needs 4k+1 frames)"]
    output = VideoGenerator(device="cpu", dtype="float32").generate(checked, tmp_path / "a.mp4", model_path=folder)
    assert output.frames == len(_mp4_frames(tmp_path / "a.mp4")) == checked.num_frames == 9


# -- folders --------------------------------------------------------------------------------------------------------
def test_the_tiny_folder_is_recognised_as_hunyuanvideo(folder: Path) -> None:
    assert isinstance(family_of_folder(folder, TINY_HUNYUAN_ID), HunyuanVideoTextToVideo)


def test_the_real_model_has_the_family_rules_before_any_download() -> None:
    assert isinstance(family_for_model_id("hunyuanvideo-community/HunyuanVideo"), HunyuanVideoTextToVideo)
    assert rules_for_model("hunyuanvideo-community/HunyuanVideo").label == "HunyuanVideo"


@pytest.mark.parametrize(
    ("change", "named"),
    [({"in_channels": 8}, "image-to-video"), ({"image_condition_type": "latent_concat"}, "latent_concat")],
    ids=["extra-channels", "image-condition"],
)
def test_an_image_conditioned_transformer_under_the_text_to_video_class_is_refused_before_loading(
    folder: Path, tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "transformer" / "config.json").read_text())
    (copy / "transformer" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelCompatibilityError, match=named) as caught:
        family_of_folder(copy, "someone/hunyuan-i2v")
    assert caught.value.model_id == "someone/hunyuan-i2v"


# -- the tiny model -------------------------------------------------------------------------------------------------
def test_the_tiny_build_is_deterministic(folder: Path, tmp_path: Path) -> None:
    """Built twice, every file has the same sha256."""
    again = build_tiny_model(TINY_HUNYUAN_ID, tmp_path / "again")
    assert read_manifest(again)["files"] == read_manifest(folder)["files"]


def test_the_tiny_pipeline_is_built_in_eval_mode() -> None:
    """Modules built in memory start in training mode (dropout on: not deterministic until evaluated)."""
    from components.generation.families.hunyuan import build_tiny_hunyuan

    modules = [m for m in build_tiny_hunyuan().components.values() if hasattr(m, "training")]
    assert len(modules) == 4 and not any(m.training for m in modules)


def test_the_tiny_model_is_small(folder: Path) -> None:
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 1_000_000


@pytest.mark.parametrize(
    ("subfolder", "make"), [("tokenizer", char_llama_tokenizer), ("tokenizer_2", char_clip_tokenizer)]
)
def test_the_tokenizers_reload_unchanged(folder: Path, subfolder: str, make: Callable[[], Any]) -> None:
    """Saved and reloaded by class name: the same class, vocabulary, padding side and ids for any text."""
    from transformers import AutoTokenizer

    made, loaded = make(), AutoTokenizer.from_pretrained(folder / subfolder)
    assert type(loaded) is type(made)
    assert loaded.get_vocab() == made.get_vocab()
    assert loaded.padding_side == made.padding_side
    assert loaded(TEXT).input_ids == made(TEXT).input_ids
    # Every character has a token ("é" as its bytes): nothing unknown (CLIP's unknown is its end-of-text token).
    assert made.unk_token_id not in made(TEXT, add_special_tokens=False).input_ids


# -- the prompt template --------------------------------------------------------------------------------------------
def test_a_character_level_tokenizer_gets_the_bare_prompt_and_a_real_sized_one_the_default() -> None:
    from transformers import LlamaTokenizer

    real_sized = LlamaTokenizer(vocab={f"t{i}": i for i in range(2000)}, merges=[])
    assert prompt_template_for(char_llama_tokenizer()) == TINY_PROMPT_TEMPLATE
    assert prompt_template_for(real_sized) is None


def test_call_arguments_give_the_tiny_template_only_to_the_tiny_model_id() -> None:
    family = HunyuanVideoTextToVideo()
    tiny = family.call_arguments(GenerationRequest(prompt="x", model_id=TINY_HUNYUAN_ID), None)
    real = family.call_arguments(GenerationRequest(prompt="x", model_id="hunyuanvideo-community/HunyuanVideo"), None)
    assert tiny["prompt_template"] == TINY_PROMPT_TEMPLATE
    assert "prompt_template" not in real


def test_denoise_decides_the_template_by_the_loaded_tokenizer_not_the_model_id(pipe: Any) -> None:
    """The tiny model's folder under another id still runs with the bare prompt (same latents as under its id)."""
    import torch

    family = HunyuanVideoTextToVideo()

    def denoised(model_id: str) -> Any:
        request = GenerationRequest(prompt="a boat", width=64, height=64, num_frames=5, steps=1, model_id=model_id)
        return family.denoise(pipe, request, None, torch.Generator().manual_seed(1), lambda *args: args[-1])

    assert bool((denoised("someone/copy-of-tiny") == denoised(TINY_HUNYUAN_ID)).all())


def test_the_default_template_would_crop_the_tiny_models_prompt_away(pipe: Any) -> None:
    """Why the rule exists: with the default template the Llama embeddings of two prompts are the same."""
    assert bool((_llama_embeddings(pipe, "a paper boat") == _llama_embeddings(pipe, "a red fox")).all())


def test_the_tiny_template_lets_the_prompt_reach_the_llama_encoder(pipe: Any) -> None:
    first, second = (_llama_embeddings(pipe, prompt, TINY_PROMPT_TEMPLATE) for prompt in ("a paper boat", "a red fox"))
    assert not bool((first == second).all())


# -- decoding -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frames", "tiles", "expected"),
    [(9, None, 1), (17, None, 2), (9, (48, 32), 2 * 2)],
    ids=["one-call", "framewise", "tiled"],
)
def test_decoder_chunks_count_the_decoders_calls(
    pipe: Any, frames: int, tiles: tuple[int, int] | None, expected: int
) -> None:
    """One call for a short clip, one per temporal tile (5 latent frames: 2), one per spatial tile (48 px tiles
    at a 32 px stride over 64 px: 2×2)."""
    import torch

    latents = torch.zeros(1, 4, (frames - 1) // 4 + 1, 8, 8)
    calls = [0]
    hook = pipe.vae.decoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        if tiles is not None:
            size, stride = tiles
            pipe.vae.enable_tiling(size, size, None, stride, stride)
        HunyuanVideoTextToVideo().decode(pipe, latents, None)
        counted = hunyuan_decoder_chunks(pipe.vae, tuple(latents.shape))
    finally:
        hook.remove()
        pipe.vae.disable_tiling()
    assert counted == calls[0] == expected


# -- through the service --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service_run(offline_service: GenerationService, folder: Path) -> list[ServiceEvent]:
    """One request for the tiny HunyuanVideo through the session's service (its tiny model a copy of the session's
    build), with a frame count and a width off the family's rules."""
    target = offline_service.settings.tiny_model_dir(TINY_HUNYUAN_ID)
    if not target.exists():
        shutil.copytree(folder, target)
    request = {"prompt": "a paper boat", "width": 72, "height": 64, "num_frames": 10, "steps": 2, "seed": 3}
    return list(offline_service.generate({**request, "model_id": TINY_HUNYUAN_ID}))


def test_the_service_makes_an_mp4_of_the_corrected_frames_and_size_naming_the_model(
    service_run: list[ServiceEvent],
) -> None:
    result = service_run[-1].data["result"]
    frames = _mp4_frames(Path(result.video_path))
    assert result.request.model_id == TINY_HUNYUAN_ID and not result.degraded
    assert len(frames) == result.request.num_frames == 9
    assert frames[0].shape == (64, 64, 3)


def test_the_service_reports_the_corrections_before_the_run(service_run: list[ServiceEvent]) -> None:
    corrections = [event.message for event in service_run if event.kind == "correction"]
    assert [event.kind for event in service_run[: len(corrections)]] == ["correction"] * len(corrections)
    assert any(line.startswith("num_frames 10 → 9 (HunyuanVideo") for line in corrections)
    assert any(line.startswith("width 72 → 64 (HunyuanVideo") for line in corrections)
