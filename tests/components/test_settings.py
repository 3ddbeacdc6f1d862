"""Settings come from KINTSUGI_* variables with defaults that serve a newcomer."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.settings import Settings, parse_bytes
from recovery.errors import InvalidParameterError


@pytest.mark.parametrize(("text", "expected"), [("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("512MiB", 2**29),
                                                 ("1000", 1000)])
def test_sizes_parse_with_units(text: str, expected: int) -> None:
    """Memory sizes accept binary and decimal units and bare bytes."""
    assert parse_bytes(text) == expected


def test_environment_overrides_defaults(tmp_path: Path) -> None:
    """Each KINTSUGI_* variable sets its field; the data folder moves every derived path with it."""
    settings = Settings.from_env({"KINTSUGI_DATA_DIR": str(tmp_path), "KINTSUGI_WORKER_MEMORY_CAP": "2GiB",
                                  "KINTSUGI_MAX_RECOVERY_ATTEMPTS": "7", "KINTSUGI_DEVICE": "cpu"})
    assert settings.worker_memory_cap == 2 * 2**30
    assert settings.max_recovery_attempts == 7
    assert settings.device == "cpu"
    assert settings.metrics_db == tmp_path / "metrics.sqlite"
    assert settings.embedded_model_dir.parent == tmp_path / "models"


def test_defaults_need_no_environment() -> None:
    """With no variables set: no memory cap, the embedded model, a data folder inside the checkout."""
    settings = Settings.from_env({})
    assert settings.worker_memory_cap is None
    assert settings.model == "kintsugi/tiny-wan-random"
    assert settings.data_dir.name == "data"


@pytest.mark.parametrize(("variable", "value"), [("KINTSUGI_WORKER_MEMORY_CAP", "lots"),
                                                 ("KINTSUGI_MAX_RECOVERY_ATTEMPTS", "-1")])
def test_bad_setting_names_the_variable(variable: str, value: str) -> None:
    """A malformed variable is rejected with its name and value, not a raw conversion error."""
    with pytest.raises(InvalidParameterError, match=variable):
        Settings.from_env({variable: value})
