"""The built-in tiny models: small, randomly initialised diffusers pipelines built offline from code, one per family
(``kintsugi/tiny-wan-random``, the default, and one for each family in ``components.generation.families``).

The default is a real diffusers Wan pipeline (transformer, VAE, UMT5 text encoder, tokenizer, UniPC flow scheduler) with
very small dimensions, so the whole product runs on a laptop CPU without downloading anything. Its weights are
random: **its videos are noise**, which the UI says. Every module is seeded, so the same code builds
byte-identical files. A hash manifest (``kintsugi_manifest.json``) records the sha256 and size of every file: it is
the only thing that catches damage that loads silently (zeroed weights, a deleted tokenizer).

Build the default with ``python -m components.generation.embedded_model [TARGET_DIR]``; the others are built the
same way (``build_tiny_model(model_id, target)``) the first time a test or a user asks for one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from components.generation.families import FAMILIES
from components.generation.families.tokenizers import (
    char_clip_tokenizer,
    char_llama_tokenizer,
    char_t5_tokenizer,
    character_vocabulary,
)
from components.generation.families.wan import build_tiny_wan, tiny_umt5_encoder
from components.system.files import hash_file, replacing, write_text_atomic
from components.system.locks import exclusive

__all__ = [
    "EMBEDDED_MODEL_ID",
    "MANIFEST_NAME",
    "build_embedded_model",
    "build_tiny_model",
    "build_tiny_wan",
    "char_clip_tokenizer",
    "char_llama_tokenizer",
    "char_t5_tokenizer",
    "character_vocabulary",
    "ensure_embedded_model",
    "ensure_tiny_model",
    "read_manifest",
    "tiny_umt5_encoder",
    "verify_manifest",
]

EMBEDDED_MODEL_ID = "kintsugi/tiny-wan-random"
MANIFEST_NAME = "kintsugi_manifest.json"
SEED = 20261128  # recorded in the manifest; each family seeds its modules from it


def _sha256(path: Path) -> str:
    return hash_file(path, "sha256")["sha256"]


def _write_manifest(folder: Path, model_id: str) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    entries = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    manifest = {"model_id": model_id, "seed": SEED, "files": entries}
    write_text_atomic(folder / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def build_tiny_model(model_id: str, target_dir: str | os.PathLike[str]) -> Path:
    """Build the tiny model ``model_id`` (one of ``families.tiny_model_ids()``) into ``target_dir`` atomically
    (build beside, verify, then rename). An existing folder at ``target_dir`` is replaced only after the new build
    verified."""
    family = next((f for f in FAMILIES if f.tiny_model_id == model_id), None)
    if family is None:
        raise KeyError(f"no built-in tiny model {model_id!r}")
    target = Path(target_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One build in a folder at a time, across processes (the parent folder itself is locked); whoever holds it owns
    # every partial beside the target, so what a killed build left there is removed first.
    with exclusive(target.parent):
        for leftover in target.parent.glob(f".{target.name}.*.incomplete"):
            shutil.rmtree(leftover, ignore_errors=True)
        with replacing(target) as staging:
            pipe = family.build_tiny()
            pipe.save_pretrained(staging, safe_serialization=True)
            _write_manifest(staging, model_id)
            problems = verify_manifest(staging)
            if problems:
                raise OSError(f"tiny model build did not verify: {problems}")
    return target


def build_embedded_model(target_dir: str | os.PathLike[str]) -> Path:
    """Build the default tiny Wan pipeline into ``target_dir`` (see ``build_tiny_model``)."""
    return build_tiny_model(EMBEDDED_MODEL_ID, target_dir)


def read_manifest(folder: str | os.PathLike[str]) -> dict:
    """The hash manifest written at build time."""
    return json.loads((Path(folder) / MANIFEST_NAME).read_text())


def verify_manifest(folder: str | os.PathLike[str], *, full: bool = True) -> list[str]:
    """Compare a model folder with its manifest; return one line per problem (empty when intact).

    ``full=False`` checks presence and sizes only (milliseconds); ``full=True`` also hashes every file.
    """
    folder = Path(folder)
    try:
        entries = read_manifest(folder)["files"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"{MANIFEST_NAME}: unreadable ({type(exc).__name__})"]
    problems = []
    for name, expected in entries.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{name}: size {path.stat().st_size} != {expected['size']}")
        elif full and _sha256(path) != expected["sha256"]:
            problems.append(f"{name}: sha256 differs")
    return problems


def ensure_tiny_model(
    model_id: str, target_dir: str | os.PathLike[str], *, on_build: Callable[[Path], None] | None = None
) -> Path:
    """Return a tiny model's folder, building it first when it is missing or fails the quick check (a build killed
    midway left either the old folder or none under the name: both rebuild here)."""
    target = Path(target_dir)
    if target.is_dir() and not verify_manifest(target, full=False):
        return target
    if on_build is not None:
        on_build(target)
    return build_tiny_model(model_id, target)


def ensure_embedded_model(
    target_dir: str | os.PathLike[str], *, on_build: Callable[[Path], None] | None = None
) -> Path:
    """Return the embedded model folder, building it first when it is missing or fails the quick check."""
    return ensure_tiny_model(EMBEDDED_MODEL_ID, target_dir, on_build=on_build)


if __name__ == "__main__":  # pragma: no cover - exercised by `make`
    import sys

    from components.settings import Settings

    destination = Path(sys.argv[1]) if len(sys.argv) > 1 else Settings.from_env().embedded_model_dir
    ensure_embedded_model(destination)
    sys.stdout.write(f"embedded model ready: {destination}\n")
