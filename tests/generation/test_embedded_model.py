"""The embedded model: built offline, reproducible to the byte, guarded by its hash manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.generation.embedded_model import (
    MANIFEST_NAME,
    build_embedded_model,
    ensure_embedded_model,
    verify_manifest,
)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_code_builds_byte_identical_files(tiny_model: Path, tmp_path: Path) -> None:
    """Two builds (here: the session's and a new one) produce the same bytes in every file."""
    again = build_embedded_model(tmp_path / "again")
    assert _files(again) == _files(tiny_model)


def test_build_is_a_real_wan_pipeline_that_loads_offline(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder loads with diffusers' own WanPipeline.from_pretrained with the hub switched off."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(tiny_model)
    assert type(pipe).__name__ == "WanPipeline"
    assert sum(p.numel() for p in pipe.transformer.parameters()) > 10_000
    assert list((tiny_model / "transformer").glob("*.safetensors"))


def test_intact_build_verifies_clean(tiny_model: Path) -> None:
    """Fresh from the builder, the manifest finds no problem, quick or full."""
    assert verify_manifest(tiny_model, full=False) == []
    assert verify_manifest(tiny_model, full=True) == []


def _copy(tiny_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "copy"))


def test_zeroed_weight_bytes_fail_the_full_check_only(tiny_model: Path, tmp_path: Path) -> None:
    """Zeroed bytes load silently; only the full (hashing) check sees them."""
    copy = _copy(tiny_model, tmp_path)
    weights = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4096:] = bytes(4096)
    weights.write_bytes(bytes(data))
    assert verify_manifest(copy, full=False) == []
    assert verify_manifest(copy, full=True) == ["transformer/diffusion_pytorch_model.safetensors: sha256 differs"]


def test_deleted_tokenizer_is_reported_missing(tiny_model: Path, tmp_path: Path) -> None:
    """A deleted tokenizer folder (which transformers would silently replace) is caught by the quick check."""
    copy = _copy(tiny_model, tmp_path)
    shutil.rmtree(copy / "tokenizer")
    problems = verify_manifest(copy, full=False)
    assert "tokenizer/tokenizer.json: missing" in problems


def test_ensure_rebuilds_a_truncated_model(tiny_model: Path, tmp_path: Path) -> None:
    """``ensure_embedded_model`` notices a truncated weight file and rebuilds the folder whole."""
    copy = _copy(tiny_model, tmp_path)
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    built: list[Path] = []
    ensure_embedded_model(copy, on_build=built.append)
    assert built == [copy]
    assert verify_manifest(copy) == []


def test_no_staging_folder_is_left_behind(tmp_path: Path) -> None:
    """The build happens beside the target and is renamed in: nothing half-built remains."""
    build_embedded_model(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (tmp_path / "model" / MANIFEST_NAME).is_file()
