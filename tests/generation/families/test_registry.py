"""The family registry: a folder finds its family from model_index.json, a mismatched folder is refused first."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from components.generation.families import FAMILIES, family_for_model_id, family_of_folder, rules_for_model
from recovery.errors import ModelCompatibilityError


def test_every_family_has_its_own_tiny_model_id() -> None:
    ids = [family.tiny_model_id for family in FAMILIES]
    assert len(set(ids)) == len(ids) and all(i.startswith("kintsugi/tiny-") for i in ids)


def test_tiny_wan_folder_is_wan21_t2v(tiny_model: Path) -> None:
    assert family_of_folder(tiny_model).name == "wan2.1-t2v"


def test_a_known_hub_id_has_its_family_rules_before_any_download() -> None:
    assert family_for_model_id("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") is not None
    assert rules_for_model("someone/unknown").side_multiple == 16


def test_an_unknown_pipeline_class_is_refused_naming_it(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelCompatibilityError, match="StableDiffusionPipeline"):
        family_of_folder(folder, "someone/sd")


def test_an_image_to_video_transformer_under_a_text_to_video_class_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """The trap measured here: an I2V Wan folder loads as WanPipeline and fails only at step 1."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "in_channels": 36}))
    with pytest.raises(ModelCompatibilityError, match="image-to-video") as caught:
        family_of_folder(folder, "someone/i2v-as-t2v")
    assert caught.value.model_id == "someone/i2v-as-t2v"


def test_tiny_family_fixture_builds_the_default(tiny_family_model: Callable[[str], Path]) -> None:
    assert (tiny_family_model("kintsugi/tiny-wan-random") / "model_index.json").is_file()


def test_a_supported_class_of_an_unsupported_variant_names_the_variants_it_runs(
    tiny_family_model: Callable[[str], Path], tmp_path: Path
) -> None:
    """A Wan 2.2 I2V-A14B-like folder (the I2V class with a second transformer) is not run as something else."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_family_model("kintsugi/tiny-wan22-a14b-random"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanImageToVideoPipeline"}))
    with pytest.raises(ModelCompatibilityError, match="variant the studio does not run") as caught:
        family_of_folder(folder, "someone/i2v-a14b")
    assert "Wan 2.1 image-to-video" in str(caught.value)
