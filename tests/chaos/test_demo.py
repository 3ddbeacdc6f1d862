"""The demo's fault matrix (``python -m components.demo --faults``) and the fault-injection views it shares with the
Scenarios tab: real faults through the real service, drawn with the chaos policy."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from components.chaos.demo import main
from components.chaos.faults import (
    FAULT_COLUMNS,
    FaultInjection,
    fault_policy,
    iter_faults,
    producible_types,
)
from components.settings import Settings
from recovery.errors import InvalidParameterError


@pytest.fixture
def workdir(tmp_path: Path, tiny_model: Path) -> Path:
    """A demo work folder with the built-in model already in its data folder (the bench then skips the build)."""
    shutil.copytree(tiny_model, tmp_path / "demo" / "data" / "models" / "tiny-wan-random")
    return tmp_path / "demo"


def test_rate_zero_prints_an_empty_table_and_builds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--faults --rate 0`` draws no type: the table has its header and no row, and no bench is built."""
    assert main(["--faults", "--rate", "0", "--workdir", str(tmp_path / "demo")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == " ".join(FAULT_COLUMNS).split()
    assert set(lines[1]) == {"-", " "} and lines[2] == ""
    assert lines[3] == f"0 of {len(producible_types())} failure types drawn at rate 0."
    assert not (tmp_path / "demo").exists()


def test_one_named_fault_runs_for_real_and_prints_its_row(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """``--faults invalid_parameters`` runs that fault through a real service: its row says how it was classified,
    that no strategy ran (refused at validation) and that it ended with guidance."""
    assert main(["--faults", "invalid_parameters", "--workdir", str(workdir)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[:4] for row in rows] == [["invalid_parameters", "invalid_parameters", "—", "guidance"]]
    assert (workdir / "data" / "metrics.sqlite").exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--faults", "no_such_failure"], "'no_such_failure'"),
        (["--rate", "0.5"], "`--rate` needs `--faults`"),
        (["--faults", "--rate", "2"], "between 0 and 1 (got '2')"),
        (["--faults", "--rate", "often"], "(got 'often')"),
    ],
)
def test_bad_demo_arguments_are_refused_by_name(argv: list[str], named: str, capsys: pytest.CaptureFixture) -> None:
    """An unknown failure type, ``--rate`` without ``--faults`` or a rate outside 0..1 stops with a usage error that
    names what was wrong."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


def test_the_draw_is_the_policy_at_its_rate() -> None:
    """Each producible type is drawn by the chaos policy with the given rate and generator: a seeded generator
    draws the same types twice, and rate 1 draws every type."""

    def drawn(rate: float, seed: int) -> list[str]:
        policy = fault_policy(rate, rng=random.Random(seed))
        return [name for name in producible_types() if policy.should_inject(name)]

    assert drawn(0.5, 7) == drawn(0.5, 7)
    assert 0 < len(drawn(0.5, 7)) < len(producible_types())
    assert drawn(1.0, 7) == list(producible_types())


@pytest.mark.parametrize("click", ["inject", "inject_at_rate"])
def test_app_injection_is_refused_when_switched_off(tmp_path: Path, click: str) -> None:
    """With ``chaos`` off, the Scenarios tab's injection refuses, naming KINTSUGI_CHAOS and how to turn it on,
    before anything is built."""
    faults = FaultInjection(Settings(data_dir=tmp_path / "data", chaos=False))
    with pytest.raises(InvalidParameterError, match="KINTSUGI_CHAOS=on") as caught:
        faults.inject("invalid_parameters") if click == "inject" else faults.inject_at_rate()
    assert caught.value.parameter == "KINTSUGI_CHAOS"
    assert not (tmp_path / "data").exists()


def test_faults_yield_the_table_so_far_after_each_one(workdir: Path) -> None:
    """Run one after another, the faults yield the run so far after each: the Scenarios tab's table grows a row at
    a time instead of staying empty for minutes."""
    runs = iter_faults(["invalid_parameters", "invalid_parameters"], workdir=workdir)
    assert [run.table()["failure type"].tolist() for run in runs] == [
        ["invalid_parameters"],
        ["invalid_parameters"] * 2,
    ]
