"""The spec's scenarios and the chaos faults, each run once per test session on one bench.

``tests/scenarios`` and the fault matrix (``tests/reliability``) check different things about the same real runs —
four failure types *are* scenarios (``components.chaos.FROM_SCENARIOS``) — so both read them from here instead of
producing the same faults twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from components.chaos.injectors import FROM_SCENARIOS, ChaosBench, as_failure_type, run_fault
from components.chaos.scenarios import RUNNERS, ScenarioReport


class SharedRuns:
    """Runs on ``bench``, memoised by name, with the ``*.incomplete`` files each one left behind."""

    def __init__(self, bench: ChaosBench) -> None:
        self.bench = bench
        self._reports: dict[str, ScenarioReport] = {}
        self._left: dict[str, list[Path]] = {}

    def _half_written(self) -> set[Path]:
        return {p for p in Path(self.bench.workdir).rglob("*.incomplete*") if p.is_file()}

    def _run(self, key: str, run: Callable[[ChaosBench], ScenarioReport]) -> ScenarioReport:
        if key not in self._reports:
            before = self._half_written()
            self._reports[key] = run(self.bench)
            self._left[key] = sorted(self._half_written() - before)
        return self._reports[key]

    def scenario(self, name: str) -> ScenarioReport:
        """One of the spec's six scenarios (``components.scenarios.RUNNERS``)."""
        return self._run(f"scenario:{name}", RUNNERS[name])

    def fault(self, failure_type: str) -> ScenarioReport:
        """The fault for one failure type; a type that is a scenario reuses that scenario's run."""
        if failure_type in FROM_SCENARIOS:
            return as_failure_type(failure_type, self.scenario(FROM_SCENARIOS[failure_type]))
        return self._run(f"fault:{failure_type}", lambda bench: run_fault(failure_type, bench))

    def left_by_scenario(self, name: str) -> list[Path]:
        self.scenario(name)
        return self._left[f"scenario:{name}"]

    def left_by_fault(self, failure_type: str) -> list[Path]:
        if failure_type in FROM_SCENARIOS:
            return self.left_by_scenario(FROM_SCENARIOS[failure_type])
        self.fault(failure_type)
        return self._left[f"fault:{failure_type}"]
