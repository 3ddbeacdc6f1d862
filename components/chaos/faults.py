"""Fault injection as the Scenarios tab and the demo use it: which failure types can be produced here, a draw at a
rate with the chaos policy, the faults run for real on one bench, and the table of what the product did.

    run = run_faults(("invalid_parameters",), workdir=folder)       # a FaultRun: reports, table(), story()
    run = run_at_rate(0.25, workdir=folder, rng=random.Random(7))   # each producible type drawn with p = 0.25
    FaultInjection(settings).inject("vram_exhaustion")             # the app's way: refused unless KINTSUGI_CHAOS=on

The draw is ``recovery.chaos.ChaosPolicy`` with one injector registered per producible type; the faults themselves
are ``components.chaos``'s injectors, through a real ``GenerationService``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from components.chaos import injectors as chaos
from components.chaos.scenarios import ScenarioReport
from components.settings import Settings
from components.views.presenters import scenario_markdown
from recovery.chaos import CHAOS_ENV, ChaosPolicy, ChaosSwitch
from recovery.errors import InvalidParameterError

__all__ = [
    "FAULT_COLUMNS",
    "OFF_MESSAGE",
    "FaultInjection",
    "FaultRun",
    "fault_policy",
    "fault_row",
    "iter_at_rate",
    "iter_faults",
    "producible_types",
    "run_at_rate",
    "run_faults",
]

FAULT_COLUMNS: tuple[str, ...] = ("failure type", "classified as", "strategies tried", "outcome", "time (s)")
OFF_MESSAGE = (
    f"Fault injection is off. Start the app with `{CHAOS_ENV}=on` (or the `--chaos on` flag) to "
    "inject failures from the Scenarios tab."
)


def producible_types() -> tuple[str, ...]:
    """The failure types the harness produces for real here: every one of the taxonomy."""
    return tuple(name for name in chaos.FAILURE_TYPES if name in chaos.INJECTORS)


def fault_row(report: ScenarioReport) -> dict[str, Any]:
    """One row of the fault table: the injected type, what the engine classified first, strategies, outcome, time."""
    return {
        "failure type": report.scenario,
        "classified as": report.failure_types[0] if report.failure_types else "— (not detected)",
        "strategies tried": " → ".join(report.strategies) or "—",
        "outcome": report.outcome,
        "time (s)": round(report.seconds, 1),
    }


@dataclass(frozen=True)
class FaultRun:
    """The faults of one click or one demo run: the types run, in order, and their reports."""

    names: tuple[str, ...]
    reports: tuple[ScenarioReport, ...]
    rate: float | None = None  # set when the types were drawn at a rate

    def table(self) -> pd.DataFrame:
        """One row per fault run, ``FAULT_COLUMNS``; no rows when nothing was drawn."""
        return pd.DataFrame([fault_row(report) for report in self.reports], columns=list(FAULT_COLUMNS))

    def story(self) -> str:
        """The last fault as the Scenarios tab tells a scenario, headed by what was drawn at a rate."""
        if not self.reports:
            return (
                "Nothing was injected."
                if self.rate is None
                else f"No failure type was drawn at rate {self.rate:g}: nothing was injected."
            )
        story = scenario_markdown(self.reports[-1])
        if self.rate is None:
            return story
        return f"**Drawn at rate {self.rate:g}:** {', '.join(self.names)}\n\n{story}"


def fault_policy(rate: float, *, rng: random.Random | None = None) -> ChaosPolicy:
    """A switched-on policy with one injector per producible type: ``policy.injector(name)(bench)`` runs it."""
    policy = ChaosPolicy(rate, ChaosSwitch(enabled=True), rng or random.Random())
    for name in producible_types():
        policy.register(name, partial(chaos.run_fault, name))
    return policy


def _check(names: Sequence[str]) -> None:
    for name in names:
        if name not in producible_types():
            raise InvalidParameterError(
                f"`failure_type` must be one of {', '.join(producible_types())} (got {name!r})",
                parameter="failure_type",
                value=name,
                constraint="a failure type",
            )


def iter_faults(
    names: Sequence[str],
    *,
    workdir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    policy: ChaosPolicy | None = None,
    rate: float | None = None,
) -> Iterator[FaultRun]:
    """Run each named fault for real on one ``ChaosBench`` (closed afterwards; none is built for no names),
    yielding the run so far after each fault — a UI shows the rows as they come.

    ``data_dir`` (default ``workdir/data``) holds the metrics the runs record; ``policy`` supplies the injectors.
    """
    names = tuple(names)
    _check(names)
    if not names:
        yield FaultRun((), (), rate)
        return
    policy = policy or fault_policy(1.0)
    bench = chaos.ChaosBench(workdir, data_dir=data_dir)
    reports: list[ScenarioReport] = []
    try:
        for name in names:
            reports.append(policy.injector(name)(bench))
            yield FaultRun(names, tuple(reports), rate)
    finally:
        bench.close()


def run_faults(names: Sequence[str], **options: Any) -> FaultRun:
    """``iter_faults`` to its end: every named fault run, in order (keywords as there)."""
    *_, last = iter_faults(names, **options)
    return last


def iter_at_rate(
    rate: float,
    *,
    names: Sequence[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    rng: random.Random | None = None,
) -> Iterator[FaultRun]:
    """Draw each of ``names`` (default: every producible type) with probability ``rate``, then run those drawn,
    yielding the run so far after each (``iter_faults``)."""
    candidates = producible_types() if names is None else tuple(names)
    _check(candidates)
    policy = fault_policy(rate, rng=rng)
    drawn = tuple(name for name in candidates if policy.should_inject(name))
    yield from iter_faults(drawn, workdir=workdir, data_dir=data_dir, policy=policy, rate=rate)


def run_at_rate(rate: float, **options: Any) -> FaultRun:
    """``iter_at_rate`` to its end (keywords as there)."""
    *_, last = iter_at_rate(rate, **options)
    return last


@dataclass(frozen=True)
class FaultInjection:
    """The Scenarios tab's fault injection: refused unless ``settings.chaos``; runs record into the app's metrics."""

    settings: Settings

    def note(self) -> str:
        """The section's one line: what the controls do, or that injection is off and how to turn it on."""
        if not self.settings.chaos:
            return OFF_MESSAGE
        return (
            f"Produce a real failure of any of the {len(producible_types())} types that can be produced here "
            "and watch the same service handle it. *Inject at rate* draws each type with probability "
            f"{self.settings.chaos_rate:g} (`KINTSUGI_CHAOS_RATE`) and runs those drawn, one after the other. "
            "Runs show in the Metrics tab."
        )

    def _require_on(self) -> None:
        if not self.settings.chaos:
            raise InvalidParameterError(OFF_MESSAGE, parameter=CHAOS_ENV, value="off", constraint="on")

    def inject(self, name: str) -> FaultRun:
        """Inject one failure type for real."""
        self._require_on()
        return run_faults((name,), workdir=self.settings.data_dir / "chaos", data_dir=self.settings.data_dir)

    def inject_at_rate(self, rng: random.Random | None = None) -> Iterator[FaultRun]:
        """Draw every producible type at ``settings.chaos_rate`` and inject those drawn; the run so far after each
        (refused before anything runs unless chaos is on)."""
        self._require_on()
        return iter_at_rate(
            self.settings.chaos_rate, workdir=self.settings.data_dir / "chaos", data_dir=self.settings.data_dir, rng=rng
        )
