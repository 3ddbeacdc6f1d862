"""Settings come from KINTSUGI_* variables with defaults that serve a newcomer."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.settings import Settings, parse_bytes
from recovery.errors import InvalidParameterError


@pytest.mark.parametrize(
    ("text", "expected"), [("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("512MiB", 2**29), ("1000", 1000)]
)
def test_sizes_parse_with_units(text: str, expected: int) -> None:
    """Memory sizes accept binary and decimal units and bare bytes."""
    assert parse_bytes(text) == expected


def test_environment_overrides_defaults(tmp_path: Path) -> None:
    """Each KINTSUGI_* variable sets its field; the data folder moves every derived path with it."""
    settings = Settings.from_env(
        {
            "KINTSUGI_DATA_DIR": str(tmp_path),
            "KINTSUGI_WORKER_MEMORY_CAP": "2GiB",
            "KINTSUGI_MAX_RECOVERY_ATTEMPTS": "7",
            "KINTSUGI_DEVICE": "cpu",
        }
    )
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


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KINTSUGI_WORKER_MEMORY_CAP", "lots"),
        ("KINTSUGI_MAX_RECOVERY_ATTEMPTS", "-1"),
        ("KINTSUGI_JOURNAL_RETENTION_DAYS", "-1"),
        ("KINTSUGI_JOURNAL_RETENTION_DAYS", "a month"),
        ("KINTSUGI_JOURNAL_RETENTION_DAYS", "1.5"),
        ("KINTSUGI_BACKEND", "kubernetes"),
        ("KINTSUGI_RAY_REPLICAS", "-2"),
    ],
)
def test_bad_setting_names_the_variable(variable: str, value: str) -> None:
    """A malformed variable is rejected with its name and value, not a raw conversion error."""
    with pytest.raises(InvalidParameterError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 30), ({"KINTSUGI_JOURNAL_RETENTION_DAYS": "7"}, 7), ({"KINTSUGI_JOURNAL_RETENTION_DAYS": "0"}, 0)],
)
def test_journal_retention_is_a_whole_number_of_days(environ: dict[str, str], expected: int) -> None:
    """The journal keeps finished entries 30 days unless KINTSUGI_JOURNAL_RETENTION_DAYS says otherwise (0: for
    ever)."""
    assert Settings.from_env(environ).journal_retention_days == expected


def test_fault_injection_is_off_by_default_at_full_rate() -> None:
    """With no variables set, fault injection is off and its rate is 1 (every type, once switched on)."""
    settings = Settings.from_env({})
    assert settings.chaos is False
    assert settings.chaos_rate == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("on", True), ("ON", True), ("1", True), ("yes", True), ("off", False), ("0", False), ("false", False)],
)
def test_chaos_switch_reads_the_on_off_words(value: str, expected: bool) -> None:
    """KINTSUGI_CHAOS takes the same words as the chaos switch of recovery.chaos, and agrees with it."""
    from recovery.chaos import ChaosSwitch

    assert Settings.from_env({"KINTSUGI_CHAOS": value}).chaos is expected
    assert ChaosSwitch.from_env({"KINTSUGI_CHAOS": value}).enabled is expected


@pytest.mark.parametrize("value", ["0", "0.25", "1"])
def test_chaos_rate_reads_a_share(value: str) -> None:
    """KINTSUGI_CHAOS_RATE accepts any share from 0 to 1."""
    assert Settings.from_env({"KINTSUGI_CHAOS_RATE": value}).chaos_rate == float(value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KINTSUGI_CHAOS", "maybe"),
        ("KINTSUGI_CHAOS_RATE", "1.5"),
        ("KINTSUGI_CHAOS_RATE", "-0.1"),
        ("KINTSUGI_CHAOS_RATE", "often"),
        ("KINTSUGI_CHAOS_RATE", "nan"),
    ],
)
def test_bad_chaos_setting_names_the_variable_and_value(variable: str, value: str) -> None:
    """A chaos switch that is not on/off, or a rate outside 0..1 or not a number, is refused with name and value."""
    with pytest.raises(InvalidParameterError) as caught:
        Settings.from_env({variable: value})
    assert variable in str(caught.value) and repr(value) in str(caught.value)
    assert caught.value.parameter == variable


def test_kintsugi_model_is_read_and_checked() -> None:
    """``KINTSUGI_MODEL`` sets the default model; a value that is not owner/name is refused naming the variable."""
    assert Settings.from_env({"KINTSUGI_MODEL": " Wan-AI/Wan2.1-T2V-1.3B-Diffusers "}).model == (
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    )
    with pytest.raises(InvalidParameterError, match="KINTSUGI_MODEL"):
        Settings.from_env({"KINTSUGI_MODEL": "../etc/passwd"})


@pytest.mark.parametrize(("environ", "expected"), [({}, 10 * 2**20), ({"KINTSUGI_MAX_UPLOAD_BYTES": "2MB"}, 2_000_000)])
def test_the_upload_limit_is_a_size(environ: dict[str, str], expected: int) -> None:
    """A start image may be 10 MiB unless KINTSUGI_MAX_UPLOAD_BYTES says otherwise; uploads live in the data
    folder."""
    settings = Settings.from_env(environ)
    assert settings.max_upload_bytes == expected
    assert settings.uploads_dir == settings.data_dir / "uploads"


@pytest.mark.parametrize("value", ["0", "big"])
def test_a_bad_upload_limit_names_the_variable(value: str) -> None:
    """No limit at all (0) or a size that is not one is refused, named."""
    with pytest.raises(InvalidParameterError, match="KINTSUGI_MAX_UPLOAD_BYTES"):
        Settings.from_env({"KINTSUGI_MAX_UPLOAD_BYTES": value})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 30.0), ({"KINTSUGI_HEALTH_INTERVAL_S": "5"}, 5.0), ({"KINTSUGI_HEALTH_INTERVAL_S": "0"}, 0.0)],
)
def test_the_health_watch_interval_is_read_in_seconds(environ: dict[str, str], expected: float) -> None:
    """The health watch quick-checks installed models every 30 s unless KINTSUGI_HEALTH_INTERVAL_S says otherwise
    (0: off)."""
    assert Settings.from_env(environ).health_interval_s == expected


@pytest.mark.parametrize("value", ["-1", "often"])
def test_a_bad_health_interval_names_the_variable(value: str) -> None:
    """A negative or non-numeric interval is refused naming KINTSUGI_HEALTH_INTERVAL_S and the value."""
    with pytest.raises(InvalidParameterError, match=f"KINTSUGI_HEALTH_INTERVAL_S.*{value}"):
        Settings.from_env({"KINTSUGI_HEALTH_INTERVAL_S": value})


def test_the_backend_is_local_unless_ray_is_chosen() -> None:
    """By default one local worker; ``KINTSUGI_BACKEND=ray`` with its address and replica count as given."""
    assert (Settings.from_env({}).backend, Settings.from_env({}).ray_address) == ("local", None)
    chosen = Settings.from_env(
        {"KINTSUGI_BACKEND": "Ray", "KINTSUGI_RAY_ADDRESS": "ray://head:10001", "KINTSUGI_RAY_REPLICAS": "4"}
    )
    assert (chosen.backend, chosen.ray_address, chosen.ray_replicas) == ("ray", "ray://head:10001", 4)
