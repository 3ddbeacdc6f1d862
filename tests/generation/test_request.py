"""Validation of generation requests: errors name the parameter and value; corrections are reported."""

from __future__ import annotations

import math
import random

import pytest

from components.generation.request import GenerationRequest, RunOptions, join_parameters, validate_request
from recovery.errors import InvalidParameterError


def _request(**changes: object) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a boat", **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "parameter", "shown"),
    [
        ({"width": 2048}, "width", "2048"),
        ({"height": 8}, "height", "8"),
        ({"num_frames": 0}, "num_frames", "0"),
        ({"num_frames": 1000}, "num_frames", "1000"),
        ({"steps": 0}, "steps", "0"),
        ({"steps": 2.5}, "steps", "2.5"),
        ({"guidance_scale": math.nan}, "guidance_scale", "nan"),
        ({"guidance_scale": -1.0}, "guidance_scale", "-1.0"),
        ({"fps": 0}, "fps", "0"),
        ({"seed": -5}, "seed", "-5"),
        ({"width": "wide"}, "width", "wide"),
        ({"prompt": "   "}, "prompt", "'   '"),
        ({"prompt": "x" * 5000}, "prompt", "5000 characters"),
        ({"model_id": "../../etc/passwd"}, "model_id", "../../etc/passwd"),
        ({"model_id": "no-slash"}, "model_id", "no-slash"),
    ],
)
def test_invalid_value_is_rejected_naming_parameter_and_value(changes: dict, parameter: str, shown: str) -> None:
    """Every out-of-range or malformed field is rejected with its name and the value given."""
    with pytest.raises(InvalidParameterError) as caught:
        validate_request(_request(**changes))
    assert f"`{parameter}`" in str(caught.value)
    assert shown in str(caught.value)
    assert caught.value.parameter == parameter


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"num_frames": 16}, "num_frames", 17),
        ({"num_frames": 10}, "num_frames", 9),
        ({"width": 100}, "width", 96),
        ({"height": 250}, "height", 256),
    ],
)
def test_wan_shape_rules_are_auto_corrected_and_reported(changes: dict, field: str, expected: int) -> None:
    """Frames not 4k+1 and sides not divisible by 16 are moved to the nearest valid value, with a line saying so."""
    checked, corrections = validate_request(_request(**changes))
    assert getattr(checked, field) == expected
    assert any(field in line and str(expected) in line for line in corrections)


@pytest.mark.parametrize(("changes", "parameter"), [({"num_frames": 16}, "num_frames"), ({"width": 100}, "width")])
def test_strict_mode_rejects_instead_of_correcting(changes: dict, parameter: str) -> None:
    """With auto-correction off, a shape Wan cannot use is an error naming the parameter."""
    with pytest.raises(InvalidParameterError, match=f"`{parameter}`"):
        validate_request(_request(**changes), auto_correct=False)


def test_valid_request_passes_unchanged_without_corrections() -> None:
    """A request that already fits every rule comes back as it was, with nothing to report."""
    request = _request(width=320, height=192, num_frames=33, steps=10, seed=7)
    checked, corrections = validate_request(request)
    assert checked == request
    assert corrections == []


def test_missing_seed_is_drawn_and_reported() -> None:
    """A request without a seed gets one, and the user is told which, so the video can be made again."""
    checked, corrections = validate_request(_request(seed=None), rng=random.Random(3))
    assert checked.seed == random.Random(3).randint(0, 2**32 - 1)
    assert any(str(checked.seed) in line for line in corrections)


def test_request_round_trips_through_a_dict_ignoring_unknown_keys() -> None:
    """``from_dict`` accepts the extra keys the recovery loop carries (e.g. ``options``)."""
    request = _request(width=512)
    assert GenerationRequest.from_dict({**request.to_dict(), "options": {"vae_tiling": True}}) == request


@pytest.mark.parametrize("value", ["yes", 1, [True]])
def test_allow_fallback_must_be_a_bool_or_null(value: object) -> None:
    """``allow_fallback`` from JSON is true, false or null; anything else is refused naming it and the value."""
    with pytest.raises(InvalidParameterError) as caught:
        GenerationRequest.from_dict({"prompt": "a cat", "allow_fallback": value})
    assert caught.value.parameter == "allow_fallback" and repr(value) in str(caught.value)
    assert GenerationRequest.from_dict({"prompt": "a cat", "allow_fallback": False}).allow_fallback is False


def test_the_fallback_consent_is_not_an_engine_parameter() -> None:
    """The engine's parameters leave ``allow_fallback`` out (it is ``run``'s flag, not a setting of a try)."""
    assert "allow_fallback" not in join_parameters(GenerationRequest("a cat", allow_fallback=True), RunOptions())
