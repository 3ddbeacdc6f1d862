"""Fixtures for the family tests: each family's tiny model is built once per session, only when a test asks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_family_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_family_model("kintsugi/tiny-ltx-random")`` → that tiny model's folder, built on first use."""
    from components.generation.embedded_model import build_tiny_model

    built: dict[str, Path] = {}

    def folder(model_id: str) -> Path:
        if model_id not in built:
            name = model_id.rsplit("/", 1)[-1]
            built[model_id] = build_tiny_model(model_id, tmp_path_factory.mktemp("families") / name)
        return built[model_id]

    return folder
