"""The Wan variants: told apart by model_index.json, their folders checked before the first step, the image really
conditioning image-to-video, Wan 2.2's rules and experts, and each tiny model generating through the service."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import pytest

from components.generation.embedded_model import build_tiny_model, read_manifest
from components.generation.families import FAMILIES, ModelFolder, family_of_folder
from components.generation.families.wan import (
    TINY_WAN22_A14B_ID,
    TINY_WAN22_TI2V_ID,
    TINY_WAN_I2V_ID,
    Wan22TextImageToVideo,
)
from components.generation.pipeline import VideoGenerator
from components.generation.request import GenerationRequest, validate_request
from components.service import GenerationService
from recovery.errors import GenerationFailedError, InvalidParameterError, ModelCompatibilityError

WAN_IDS = (TINY_WAN_I2V_ID, TINY_WAN22_TI2V_ID, TINY_WAN22_A14B_ID)
SMALL: dict[str, Any] = dict(prompt="a paper boat", width=64, height=64, num_frames=9, steps=2, seed=7)


def _image(folder: Path, colour: tuple[int, int, int], side: int = 64) -> Path:
    from PIL import Image

    path = folder / f"image-{side}-{'-'.join(map(str, colour))}.png"
    Image.new("RGB", (side, side), colour).save(path)
    return path


def _copy(folder: Path, target: Path, component: str, **changes: Any) -> Path:
    """A copy of ``folder`` whose ``component`` JSON (``model_index`` or a component's config) has ``changes``."""
    shutil.copytree(folder, target)
    path = target / "model_index.json" if component == "model_index" else target / component / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return target


@pytest.fixture(scope="module")
def generator() -> VideoGenerator:
    return VideoGenerator(device="cpu", dtype="float32")


# -- telling the variants apart -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "name"),
    [(TINY_WAN_I2V_ID, "wan2.1-i2v"), (TINY_WAN22_TI2V_ID, "wan2.2-ti2v"), (TINY_WAN22_A14B_ID, "wan2.2-a14b")],
)
def test_each_tiny_folder_finds_its_family(model_id: str, name: str, tiny_family_model: Callable[[str], Path]) -> None:
    """The registry, in its order, picks each tiny Wan's own family from its model_index.json."""
    assert family_of_folder(tiny_family_model(model_id), model_id).name == name


ENCODER = ["transformers", "CLIPVisionModel"]
NONE = [None, None]


@pytest.mark.parametrize(
    ("index", "name"),
    [
        ({"_class_name": "WanPipeline", "transformer_2": NONE}, "wan2.1-t2v"),
        ({"_class_name": "WanImageToVideoPipeline", "image_encoder": ENCODER, "expand_timesteps": False}, "wan2.1-i2v"),
        ({"_class_name": "WanPipeline", "expand_timesteps": True, "transformer_2": NONE}, "wan2.2-ti2v"),
        ({"_class_name": "WanImageToVideoPipeline", "expand_timesteps": True, "image_encoder": NONE}, "wan2.2-ti2v"),
        ({"_class_name": "WanPipeline", "transformer_2": ["diffusers", "X"], "boundary_ratio": 0.875}, "wan2.2-a14b"),
    ],
    ids=["t2v", "i2v", "ti2v", "ti2v-as-i2v-class", "a14b"],
)
def test_exactly_one_wan_family_matches_each_index(index: dict[str, Any], name: str, tmp_path: Path) -> None:
    """Class name, expand_timesteps and transformer_2 tell the variants apart whatever the registry order."""
    matching = [family.name for family in FAMILIES if family.matches(ModelFolder(tmp_path, index))]
    assert matching == [name]


# -- folders refused before the first step --------------------------------------------------------------------------


def test_a_text_to_video_transformer_under_the_image_to_video_class_is_refused(
    tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """The converse of the T2V trap: a 16-channel transformer cannot take the image latents (36 channels)."""
    folder = _copy(tiny_family_model(TINY_WAN_I2V_ID), tmp_path / "m", "transformer", in_channels=16)
    with pytest.raises(ModelCompatibilityError, match="cannot run image-to-video") as caught:
        family_of_folder(folder, "someone/t2v-as-i2v")
    assert caught.value.model_id == "someone/t2v-as-i2v"


def test_an_image_to_video_folder_without_its_image_encoder_is_refused(
    tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """A transformer that takes CLIP embeddings needs the encoder that makes them."""
    folder = _copy(tiny_family_model(TINY_WAN_I2V_ID), tmp_path / "m", "model_index", image_encoder=NONE)
    with pytest.raises(ModelCompatibilityError, match="no image encoder"):
        family_of_folder(folder, "someone/i2v")


def test_a_second_expert_without_a_boundary_is_refused(
    tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """Without boundary_ratio the pipeline would never call transformer_2: half the model silently unused."""
    folder = _copy(tiny_family_model(TINY_WAN22_A14B_ID), tmp_path / "m", "model_index", boundary_ratio=None)
    with pytest.raises(ModelCompatibilityError, match="boundary_ratio"):
        family_of_folder(folder, "someone/a14b")


def test_a_ti2v_transformer_with_image_channels_is_refused(
    tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """Expanded timesteps put the image in the first latent frame: extra input channels fail at step 1."""
    folder = _copy(tiny_family_model(TINY_WAN22_TI2V_ID), tmp_path / "m", "transformer", in_channels=100)
    with pytest.raises(ModelCompatibilityError, match="expanded timesteps"):
        family_of_folder(folder, "someone/ti2v")


# -- the tiny models ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", WAN_IDS)
def test_a_tiny_wan_builds_to_identical_files_twice(model_id: str, tmp_path: Path) -> None:
    """Seeded modules: two builds have the same manifest (every file's sha256), under 1 MB."""
    first = read_manifest(build_tiny_model(model_id, tmp_path / "a"))["files"]
    second = read_manifest(build_tiny_model(model_id, tmp_path / "b"))["files"]
    assert first == second
    assert sum(entry["size"] for entry in first.values()) < 1_000_000


# -- image-to-video -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", [TINY_WAN_I2V_ID, TINY_WAN22_TI2V_ID])
def test_the_image_conditions_the_video(
    model_id: str, generator: VideoGenerator, tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """Same seed: the same image gives identical frames, a different image different frames."""
    folder = tiny_family_model(model_id)
    red, blue = _image(tmp_path, (200, 40, 40)), _image(tmp_path, (20, 140, 240))

    def run(image: Path, name: str) -> str:
        request = GenerationRequest(**SMALL, model_id=model_id, image=str(image))
        return generator.generate(request, tmp_path / name, model_path=folder).frames_sha256

    first, again, other = run(red, "1.mp4"), run(red, "2.mp4"), run(blue, "3.mp4")
    assert first == again != other


def test_ti2v_with_an_image_decodes_like_the_image_to_video_pipeline(
    generator: VideoGenerator, tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """TI2V's image-to-video runs WanImageToVideoPipeline over the same modules; its kept latents decode to that
    pipeline's own frames."""
    import torch
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    family = Wan22TextImageToVideo()
    request = GenerationRequest(**SMALL, model_id=TINY_WAN22_TI2V_ID)
    image = Image.open(_image(tmp_path, (200, 40, 40))).convert("RGB")
    generator.load(tiny_family_model(TINY_WAN22_TI2V_ID), TINY_WAN22_TI2V_ID)
    pipe = generator.pipe
    latents = family.denoise(pipe, request, image, torch.Generator().manual_seed(7), lambda *a: a[-1])
    with torch.no_grad():
        ours = pipe.video_processor.postprocess_video(family.decode(pipe, latents, request), output_type="np")[0]
    i2v = WanImageToVideoPipeline.from_pretrained(tiny_family_model(TINY_WAN22_TI2V_ID))
    i2v.set_progress_bar_config(disable=True)
    theirs = i2v(**family.call_arguments(request, image), generator=torch.Generator().manual_seed(7)).frames[0]
    assert np.asarray(ours).shape == np.asarray(theirs).shape == (9, 64, 64, 3)
    assert float(np.abs(np.asarray(ours) - np.asarray(theirs)).max()) <= 1e-5


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_a_ti2v_folder_saved_under_the_image_to_video_class_runs_like_the_hubs(
    with_image: bool, generator: VideoGenerator, tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """The same weights named WanImageToVideoPipeline (no image encoder) make the same frames, for either task."""
    folder = tiny_family_model(TINY_WAN22_TI2V_ID)
    as_i2v = _copy(
        folder,
        tmp_path / "i2v",
        "model_index",
        _class_name="WanImageToVideoPipeline",
        image_encoder=NONE,
        image_processor=NONE,
    )
    image = str(_image(tmp_path, (200, 40, 40))) if with_image else None
    hub = generator.generate(
        GenerationRequest(**SMALL, model_id=TINY_WAN22_TI2V_ID, image=image), tmp_path / "a.mp4", model_path=folder
    )
    other = generator.generate(
        GenerationRequest(**SMALL, model_id="someone/ti2v-as-i2v", image=image), tmp_path / "b.mp4", model_path=as_i2v
    )
    assert type(generator.pipe).__name__ == "WanImageToVideoPipeline"
    assert other.frames_sha256 == hub.frames_sha256


# -- Wan 2.2 shapes and experts -------------------------------------------------------------------------------------


def test_ti2v_sides_divisible_by_16_only_come_back_smaller_from_the_pipeline(
    generator: VideoGenerator, tiny_family_model: Callable[[str], Path]
) -> None:
    """The measured trap behind the ÷32 rule: at 80×80 (÷16) the pipeline passes its check and returns 64×64."""
    import torch

    generator.load(tiny_family_model(TINY_WAN22_TI2V_ID), TINY_WAN22_TI2V_ID)
    frames = generator.pipe(
        prompt="x", width=80, height=80, num_frames=5, num_inference_steps=1, generator=torch.Generator()
    ).frames[0]
    assert frames.shape[1:3] == (64, 64)


def test_ti2v_corrects_sides_to_32_with_a_report() -> None:
    """So a TI2V request at 80 px is brought to a multiple of 32 first, and the change is reported."""
    checked, corrections = validate_request(
        GenerationRequest(prompt="x", width=80, height=64, model_id=TINY_WAN22_TI2V_ID)
    )
    assert checked.width % 32 == 0
    assert any(line.startswith(f"width 80 → {checked.width}") for line in corrections)
    with pytest.raises(InvalidParameterError, match="divisible by 32"):
        Wan22TextImageToVideo.rules.check(80, 64, 9, 2)


def test_both_a14b_experts_denoise(generator: VideoGenerator, tiny_family_model: Callable[[str], Path]) -> None:
    """High-noise steps run transformer, low-noise ones transformer_2 (the boundary falls between 2 steps)."""
    import torch

    calls = {"transformer": 0, "transformer_2": 0}
    request = GenerationRequest(**SMALL, model_id=TINY_WAN22_A14B_ID)
    generator.load(tiny_family_model(TINY_WAN22_A14B_ID), TINY_WAN22_A14B_ID)
    pipe = generator.pipe
    hooks = [
        getattr(pipe, name).register_forward_hook(lambda *_a, name=name: calls.__setitem__(name, calls[name] + 1))
        for name in calls
    ]
    try:
        family_of_folder(tiny_family_model(TINY_WAN22_A14B_ID)).denoise(
            pipe, request, None, torch.Generator().manual_seed(7), lambda *a: a[-1]
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0


# -- through the service --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(offline_service: GenerationService) -> GenerationService:
    """The session's service (hub a closed port); its tiny Wan variants are built there on first use."""
    return offline_service


@pytest.mark.parametrize("model_id", WAN_IDS)
def test_the_service_generates_with_each_tiny_wan(model_id: str, service: GenerationService, tmp_path: Path) -> None:
    """An mp4 of the requested frames and size, made by the model asked for (I2V given an image at that size)."""
    image = str(_image(tmp_path, (200, 40, 40))) if model_id == TINY_WAN_I2V_ID else None
    result = service.generate_video({**SMALL, "model_id": model_id, "image": image})
    with imageio.get_reader(result.video_path, format="FFMPEG") as reader:
        frames = list(reader.iter_data())
    assert (len(frames), *frames[0].shape) == (9, 64, 64, 3)
    assert result.output.model_id == result.request.model_id == model_id and result.fallback_to is None


def test_the_service_refuses_image_to_video_without_an_image(service: GenerationService) -> None:
    """Wan 2.1 I2V makes a video from an image: without one the request fails as invalid, before any step (not
    as a crash at step 1)."""
    kinds: list[str] = []
    with pytest.raises(GenerationFailedError) as caught:
        for event in service.generate({**SMALL, "model_id": TINY_WAN_I2V_ID}):
            kinds.append(event.kind)
    assert caught.value.report["error"]["type"] == "invalid_parameters"
    assert "progress" not in kinds
