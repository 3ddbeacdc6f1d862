"""The fault matrix: every failure type produced for real through the real service, and what the product did.

Run with ``pytest -s`` to see the table (failure type → classification, strategies, outcome).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.chaos.injectors import FAILURE_TYPES
from components.chaos.scenarios import ScenarioReport
from components.store.cache import HubCache
from components.store.disk import unfinished_downloads
from recovery.messages import scrub
from recovery.strategies.defaults import DEFAULT_STRATEGY_MAP
from recovery.taxonomy import EnhancedFailureType
from tests.support.shared_runs import SharedRuns

#: Where the product today does not do what the default strategy map promises, found by running the matrix. The
#: test for these asserts the promise and is expected to fail (strict): fixing the product turns it red, and the
#: entry is then removed.
GAPS: dict[str, str] = {}
#: The outcome each type reached in the run the docs' table was made from.
OUTCOMES: dict[str, str] = {
    "model_download_failure": "recovered",
    "model_corruption_detected": "recovered",
    "model_version_mismatch": "recovered (degraded)",
    "model_loading_timeout": "guidance",
    "model_integrity_failure": "recovered (degraded)",
    "model_compatibility_error": "recovered (degraded)",
    "vram_exhaustion": "recovered",
    "storage_space_insufficient": "recovered (degraded)",
    "network_connectivity_loss": "recovered (degraded)",
    "bandwidth_limitation": "recovered (degraded)",
    "hardware_optimization_failure": "recovered",
    "generation_pipeline_error": "guidance",
    "system_resource_error": "recovered",
    "dependency_missing": "guidance",
    "invalid_parameters": "guidance",
    "unsupported_operation": "guidance",
    "permission_denied": "recovered (degraded)",
}
_ROWS: dict[str, ScenarioReport] = {}


@pytest.fixture(scope="module")
def runs(shared_runs: SharedRuns) -> Iterator[SharedRuns]:
    """The session's runs (the four types that are scenarios run once for both suites); the table at the end."""
    yield shared_runs
    _print_table()


def _print_table() -> None:
    print("\n| failure type | classified as | strategies tried | outcome | time (s) |")
    print("|---|---|---|---|---|")
    for name, report in _ROWS.items():
        first = report.failure_types[0] if report.failure_types else "— (not detected)"
        print(
            f"| {name} | {first} | {' → '.join(report.strategies) or '—'} | {report.outcome} | {report.seconds:.1f} |"
        )


def _report(name: str, runs: SharedRuns) -> ScenarioReport:
    _ROWS[name] = runs.fault(name)
    return _ROWS[name]


#: Refused at validation, before any attempt: there is no strategy to check (its own test says so).
REFUSED_BEFORE_RUNNING = ("invalid_parameters",)


def _cases(*, leave_out: tuple[str, ...] = ()) -> list[object]:
    return [pytest.param(name, id=name) for name in FAILURE_TYPES if name not in leave_out]


@pytest.mark.parametrize("name", _cases())
def test_fault_runs_through_the_service(name: str, runs: SharedRuns) -> None:
    """The real fault ends as the product ends it today: a video, or catalogued guidance with steps."""
    report = _report(name, runs)
    assert report.outcome == OUTCOMES[name], report.told
    if report.outcome == "guidance":
        assert report.steps, "a hand-over to the user must come with steps"
    if report.outcome == "recovered (degraded)":
        assert report.degraded and report.changes, "a degraded video must say what changed"


@pytest.mark.parametrize("name", _cases())
def test_fault_is_classified_as_its_type(name: str, runs: SharedRuns, request: pytest.FixtureRequest) -> None:
    """The first failure the engine classified is the injected type (known gaps are strict expected failures)."""
    if name in GAPS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=GAPS[name]))
    report = _report(name, runs)
    assert report.failure_types[:1] == (name,), report.told


@pytest.mark.parametrize("name", _cases(leave_out=REFUSED_BEFORE_RUNNING))
def test_strategies_follow_the_default_map(name: str, runs: SharedRuns) -> None:
    """Strategies run for the first failure come from its default map, starting at the map's first entry."""
    report = _report(name, runs)
    assert report.tries, report.told
    first = report.failure_types[0]
    promised = [s.value for s in DEFAULT_STRATEGY_MAP[EnhancedFailureType(first)]]
    tried = [t.strategy for t in report.tries if t.failure_type == first]
    assert tried[0] == promised[0]
    assert set(tried) <= set(promised), f"{tried} not within {promised}"


@pytest.mark.parametrize("name", REFUSED_BEFORE_RUNNING)
def test_a_request_refused_at_validation_runs_no_strategy(name: str, runs: SharedRuns) -> None:
    """Bad parameters are refused before the first attempt: classified, no strategy tried, guidance with steps."""
    report = _report(name, runs)
    assert report.failure_types == (name,) and report.tries == () and report.steps


@pytest.mark.parametrize("name", _cases())
def test_user_message_is_already_scrubbed(name: str, runs: SharedRuns) -> None:
    """What the user was told has no paths, tokens or tracebacks: scrubbing it changes nothing."""
    report = _report(name, runs)
    assert report.told
    assert scrub(report.told, data_dir=str(runs.bench.data_dir)) == report.told
    assert "Traceback" not in report.told and "/tmp/" not in report.told


@pytest.mark.parametrize("name", _cases())
def test_run_is_recorded_in_the_metrics(name: str, runs: SharedRuns) -> None:
    """Every request of the run has a row in the metrics store's runs table."""
    report = _report(name, runs)
    assert report.correlation_ids
    with sqlite3.connect(runs.bench.data_dir / "metrics.sqlite") as db:
        rows = db.execute(
            f"SELECT ok FROM runs WHERE correlation_id IN ({','.join('?' * len(report.correlation_ids))})",
            report.correlation_ids,
        ).fetchall()
    assert len(rows) == len(report.correlation_ids)
    assert bool(rows[0][0]) == report.recovered


def _kept_to_resume(path: Path, told: str) -> bool:
    """A stopped download's partial blob that the store offers in its clean-up plans and the user was told of."""
    cache = path.parents[2]  # <cache>/models--owner--name/blobs/<blob>.incomplete
    return any(path in item.files and item.repo_id in told for item in unfinished_downloads(HubCache(cache)))


@pytest.mark.parametrize("name", _cases())
def test_nothing_is_left_half_written(name: str, runs: SharedRuns) -> None:
    """The run leaves no new ``*.incomplete`` file in the model caches or the outputs — except a download stopped
    part-way (too slow), kept so that it resumes: listed by the store and named in what the user was told."""
    report = _report(name, runs)
    assert [p.name for p in runs.left_by_fault(name) if not _kept_to_resume(p, report.told)] == []
