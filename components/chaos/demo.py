"""``python -m components.chaos [--workdir DIR]``: the spec's six demo scenarios, each with a real fault, and a
summary table of what recovery did — compared with the spec's own demo at the end.

``python -m components.chaos --faults [NAME ...] [--rate R]``: the fault matrix instead — every failure type that can
be produced here (or the ones named), each drawn with probability R when ``--rate`` is given, run for real, and a
table of failure type, what it was classified as, the strategies tried, the outcome and the time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from huggingface_hub.utils import disable_progress_bars

from components.chaos.faults import FAULT_COLUMNS, FaultRun, fault_row, producible_types, run_at_rate, run_faults
from components.chaos.scenarios import SPEC_DEMO, SPEC_GUIDANCE_ONLY, ScenarioReport, run_all
from components.generation.embedded_model import EMBEDDED_MODEL_ID
from recovery.errors import InvalidParameterError
from recovery.settings import parse_rate

__all__ = ["closing_line", "fault_table", "main", "run_fault_matrix", "summary_table"]

_COLUMNS = ("scenario", "failure type", "strategies tried", "recovered?", "time (s)", "what the user was told")


def _text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, except the last, which is not cut or padded."""
    widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns[:-1])]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  " + cells[-1]

    rule = "  ".join("-" * width for width in widths) + "  " + "-" * len(columns[-1])
    return "\n".join([line(columns), rule, *(line(row) for row in rows)])


def summary_table(reports: Sequence[ScenarioReport]) -> str:
    """The reports as a plain-text table, one row per scenario (the last column is not cut)."""
    return _text_table(_COLUMNS, [[str(report.as_row()[column]) for column in _COLUMNS] for report in reports])


def fault_table(run: FaultRun) -> str:
    """The faults run as a plain-text table: failure type, classified as, strategies tried, outcome, time (s)."""
    return _text_table(
        FAULT_COLUMNS, [[str(fault_row(report)[column]) for column in FAULT_COLUMNS] for report in run.reports]
    )


def run_fault_matrix(
    names: Sequence[str] | None = None, *, rate: float | None = None, workdir: str | None = None
) -> FaultRun:
    """The faults the demo runs: ``names`` (default: every type producible here), each drawn with probability
    ``rate`` when given (the switch is on: asking is explicit); nothing is built when nothing is drawn."""
    chosen = producible_types() if not names else tuple(names)
    if rate is None:
        return run_faults(chosen, workdir=workdir)
    return run_at_rate(rate, names=chosen, workdir=workdir)


def _rate(text: str) -> float:
    try:
        return parse_rate("--rate", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def closing_line(reports: Sequence[ScenarioReport]) -> str:
    """How this run compares with the spec's demo: 3 of 6 recovered automatically, the rest with guidance."""
    recovered = [r.scenario for r in reports if r.recovered]
    beyond = [name for name in recovered if name in SPEC_GUIDANCE_ONLY]
    share = f"{len(recovered)} of {len(reports)} ({100 * len(recovered) / max(1, len(reports)):.0f} %)"
    line = f"Kintsugi recovered {share} automatically; the spec's demo reported 3 of 6 (50 %), the rest with guidance."
    if beyond:
        promised = ", ".join(f"{name} ({SPEC_DEMO[name][1]})" for name in beyond)
        line += f" Recovered here where the spec's demo offered guidance or degradation only: {promised}."
    missed = [r.scenario for r in reports if not r.recovered]
    if missed:
        line += f" Ended with guidance here: {', '.join(missed)}."
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """Run the six scenarios (or, with ``--faults``, the fault matrix) and print the table; for the scenarios also
    the gaps found and the comparison with the spec."""
    parser = argparse.ArgumentParser(prog="python -m components.chaos", description=__doc__)
    parser.add_argument("--workdir", help="where models, videos and metrics go (default: a new temporary folder)")
    parser.add_argument(
        "--faults",
        nargs="*",
        metavar="NAME",
        help="run the fault matrix instead: every failure type producible here, or those named",
    )
    parser.add_argument("--rate", type=_rate, help="with --faults: draw each type with this probability (0..1)")
    parser.add_argument(
        "--model",
        default=EMBEDDED_MODEL_ID,
        help="the scenarios' tiny model: any text-to-video family's (e.g. kintsugi/tiny-ltx-random)",
    )
    args = parser.parse_args(argv)
    if args.rate is not None and args.faults is None:
        parser.error("`--rate` needs `--faults`")
    disable_progress_bars()  # the table is the output; the hub's retry warnings stay in the report's timeline
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    out = sys.stdout
    if args.faults is not None:
        try:
            run = run_fault_matrix(args.faults, rate=args.rate, workdir=args.workdir)
        except InvalidParameterError as exc:  # a name that is not a failure type, or one not producible here
            parser.error(str(exc))
        out.write(fault_table(run) + "\n")
        if args.rate is not None:
            out.write(
                f"\n{len(run.names)} of {len(args.faults or producible_types())} failure types drawn at "
                f"rate {args.rate:g}.\n"
            )
        return 0
    try:
        reports = run_all(args.workdir, model_id=args.model)
    except InvalidParameterError as exc:
        parser.error(str(exc))
    out.write(summary_table(reports) + "\n\n")
    for report in reports:
        for gap in report.gaps:
            out.write(f"gap in {report.scenario}: {gap}\n")
    out.write("\n" + closing_line(reports) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
