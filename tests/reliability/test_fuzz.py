"""Fuzzing with hypothesis: any request either validates or is refused naming the parameter, in the domain and over
REST, never with an unhandled error or a 500. Figures: ``--hypothesis-show-statistics`` (see docs/reliability.md)."""

from __future__ import annotations

import json
import random
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from components.generation.request import LIMITS, GenerationRequest, validate_request
from components.views import GenerateBody, check_body
from recovery.errors import InvalidParameterError
from tests.support.spec import SPEC_ERROR_KEYS

FIELDS = tuple(f.name for f in fields(GenerationRequest))
ERROR_KEYS = SPEC_ERROR_KEYS

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63), 2**64 + 1, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
texts = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60),
    st.integers(0, 1_100_000).map(lambda n: "é" * n),  # up to past a megabyte
    st.just(" \t\n"),
    st.just("a\x00b"),
)
model_ids = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,5}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,5}", fullmatch=True),
    st.sampled_from(["../etc/passwd", "/abs/path", "a\\b", "https://evil.example/x", "a/b/c", "a/..", "a/b\n"]),
)
sides = st.one_of(st.integers(-64, 2048), st.floats(-1e6, 1e6), st.sampled_from([16, 1024, 1025, 15, 0]))
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "prompt": texts,
    "negative_prompt": texts,
    "model_id": model_ids,
    "width": sides,
    "height": sides,
    "num_frames": st.integers(-5, 200),
    "steps": st.integers(-5, 120),
    "guidance_scale": st.floats(-5, 30),
    "seed": st.one_of(st.none(), st.integers(-5, 2**33)),
    "fps": st.integers(-5, 70),
    "allow_fallback": st.one_of(st.none(), st.booleans()),
    "image": st.one_of(st.none(), junk),
}
field_values = {name: st.one_of(junk, strategy) for name, strategy in FIELD_VALUES.items()}


def _check_refusal(exc: InvalidParameterError) -> None:
    event(f"refused: {exc.parameter}")
    assert exc.parameter in FIELDS
    assert f"`{exc.parameter}`" in str(exc)


@settings(max_examples=600, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {"prompt": field_values["prompt"]}, optional={name: field_values[name] for name in FIELDS if name != "prompt"}
    )
)
def test_any_request_validates_or_is_refused_naming_the_parameter(values: dict[str, Any]) -> None:
    """validate_request either returns a request inside every limit or raises InvalidParameterError whose
    `parameter` is a request field, named in backquotes in the message; nothing else escapes."""
    try:
        checked, _corrections = validate_request(GenerationRequest(**values), rng=random.Random(0))
    except InvalidParameterError as exc:
        _check_refusal(exc)
        return
    event("accepted")
    assert LIMITS.min_side <= checked.width <= LIMITS.max_side and checked.width % LIMITS.side_multiple == 0
    assert LIMITS.min_side <= checked.height <= LIMITS.max_side and checked.height % LIMITS.side_multiple == 0
    assert (checked.num_frames - 1) % LIMITS.frame_multiple == 0 and checked.num_frames <= LIMITS.max_frames
    assert LIMITS.min_steps <= checked.steps <= LIMITS.max_steps and 0 <= checked.seed <= LIMITS.max_seed
    assert 0.0 <= checked.guidance_scale <= LIMITS.max_guidance and len(checked.prompt) <= LIMITS.max_prompt_chars


@settings(max_examples=600, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {"prompt": field_values["prompt"]}, optional={name: field_values[name] for name in FIELDS if name != "prompt"}
    )
)
def test_the_rest_body_refuses_exactly_what_validation_refuses(values: dict[str, Any]) -> None:
    """REST's `GenerateBody` accepts a request exactly when validate_request does (a shape Wan cannot use stays a
    correction, not a refusal), and when it refuses, it names the parameter validate_request names."""
    body, problems = check_body(values)
    try:
        validate_request(GenerationRequest(**values), rng=random.Random(0))
    except InvalidParameterError as exc:
        event(f"refused by both: {len(problems)} parameter(s)")
        assert body is None and exc.parameter in [problem["parameter"] for problem in problems]
        return
    event("accepted by both")
    assert body is not None and problems == []


plausible = st.fixed_dictionaries(
    {
        "prompt": st.text(min_size=1, max_size=80).filter(lambda text: text.strip() and "\x00" not in text),
        "width": st.integers(1, 1100),
        "height": st.integers(1, 1100),
        "num_frames": st.integers(0, 170),
        "steps": st.integers(1, 100),
        "guidance_scale": st.floats(0, 20),
        "fps": st.integers(1, 60),
        "seed": st.one_of(st.none(), st.integers(0, LIMITS.max_seed)),
    }
)


@settings(max_examples=200, deadline=None)
@given(values=plausible)
def test_a_validated_request_validates_again_unchanged(values: dict[str, Any]) -> None:
    """What validation returns passes again with no correction (the journal re-runs it with auto-correct off)."""
    try:
        checked, _ = validate_request(GenerationRequest(**values), rng=random.Random(0))
    except InvalidParameterError:
        assume(False)
    assert validate_request(checked, auto_correct=False) == (checked, [])


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.text(min_size=1, max_size=20).filter(str.strip),
    extra=st.dictionaries(st.text(max_size=12).filter(lambda key: key not in FIELDS), junk, max_size=6),
)
def test_unknown_keys_are_ignored(prompt: str, extra: dict[str, Any]) -> None:
    """Keys that are not request fields (recovery bookkeeping, client extras) never change or break a request."""
    assume("\x00" not in prompt)
    assert GenerationRequest.from_dict({"prompt": prompt, **extra}) == GenerationRequest(prompt=prompt)


def test_huge_integer_guidance_scale_is_refused_naming_it() -> None:
    """A whole number past float range for `guidance_scale` is refused naming it (not an OverflowError)."""
    with pytest.raises(InvalidParameterError, match="`guidance_scale`"):
        validate_request(GenerationRequest(prompt="x", guidance_scale=10**400))


def test_request_without_prompt_is_refused_naming_it() -> None:
    """A mapping without `prompt` is refused naming it (not a TypeError from the dataclass)."""
    with pytest.raises(InvalidParameterError, match="`prompt`"):
        GenerationRequest.from_dict({"width": 64})


# -- over REST ------------------------------------------------------------------------------------------------------
BODY_FIELDS = frozenset(GenerateBody.model_fields)


def _expected_refusal(body: Any) -> tuple[list[str], int] | None:
    """What the API must name for ``body``: the request fields (the body itself when it is not an object) and the
    number of keys that are not parameters; ``None`` when the body is a valid request (it would run)."""
    if not isinstance(body, dict):
        return ["body"], 0
    unknown = sum(1 for key in body if key not in BODY_FIELDS)
    if "prompt" not in body:
        return ["prompt"], unknown
    try:
        validate_request(GenerationRequest.from_dict(body), rng=random.Random(0))
    except InvalidParameterError as exc:
        return [str(exc.parameter)], unknown
    return ([], unknown) if unknown else None


def _assert_refused(answer: Any, parameters: list[str], unknown: int = 0) -> None:
    """422 in the spec's error shape, every expected parameter named in the message, one entry of `error.fields`
    per key that is not a parameter (its name may be scrubbed: counted, not matched)."""
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert set(body) == {"error", "correlation_id"} and ERROR_KEYS <= set(body["error"]) <= ERROR_KEYS | {"fields"}
    assert body["error"]["type"] == "invalid_parameters"
    for parameter in parameters:
        assert f"`{parameter}`" in body["error"]["message"]
    fields = body["error"].get("fields", [])
    assert sum(1 for field in fields if field["constraint"].startswith("is not a parameter")) == unknown


request_bodies = st.one_of(
    junk.filter(lambda value: not isinstance(value, dict)),
    st.dictionaries(st.text(max_size=12), junk, max_size=5).filter(lambda value: "prompt" not in value),
    st.fixed_dictionaries(
        {"prompt": field_values["prompt"]}, optional={name: field_values[name] for name in FIELDS if name != "prompt"}
    ),
    st.fixed_dictionaries({"prompt": field_values["prompt"]}).flatmap(
        lambda base: st.dictionaries(st.text(max_size=10), junk, max_size=4).map(lambda extra: {**extra, **base})
    ),
)


@settings(max_examples=300, deadline=None)
@given(body=request_bodies)
@example(body=[{"prompt": "a boat"}])
@example(body={"prompt": None})
@example(body={"prompt": "x" * 1_000_000})
def test_rest_refuses_every_malformed_body_with_the_spec_error(api_client: Any, body: Any) -> None:
    """POST /api/v1/generate answers any malformed JSON body with 422 in the spec's error shape naming the
    parameter (the body itself when it is not an object) and every key that is not a parameter, never a 500 or
    FastAPI's own 422."""
    expected = _expected_refusal(body)
    assume(expected is not None)  # a valid body would generate a video: covered by the journal tests
    assert expected is not None
    event(f"refused: {expected[0][0] if expected[0] else 'unknown keys only'}")
    if expected[1]:
        event("with unknown keys")
    _assert_refused(api_client.post("/api/v1/generate", content=json.dumps(body)), *expected)


@settings(max_examples=150, deadline=None)
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)))
@example(raw=b"")
@example(raw=b"[" * 100_000)
@example(raw=b'{"prompt": "x", "width": ' + b"9" * 5000 + b"}")
@example(raw=b"\xff\xfe{}")
def test_rest_refuses_bytes_that_are_not_a_json_object(api_client: Any, raw: bytes) -> None:
    """Bytes that are not a JSON object (not JSON, not UTF-8, nested past the parser, numbers past int's digit
    limit) answer 422 naming `body`."""
    try:
        parsed, kind = json.loads(raw), "JSON, not an object"
    except (ValueError, RecursionError):
        parsed, kind = None, "not JSON"
    assume(not isinstance(parsed, dict))
    event(kind)
    _assert_refused(
        api_client.post("/api/v1/generate", content=raw, headers={"content-type": "application/json"}), ["body"]
    )
