"""The switch that turns a failed speed-up off, and keeps it off for later requests."""

from __future__ import annotations

from components.generation.optimisations import OptimisationSwitch
from components.generation.request import GenerationRequest, RunOptions, join_parameters, split_parameters
from recovery.classify import Classifier
from recovery.errors import HardwareOptimizationError, OutOfMemoryError

REQUEST = GenerationRequest(prompt="a lantern", num_frames=9, width=64, height=64, steps=2)
COMPILE_FAILED = HardwareOptimizationError(
    "torch.compile failed on this machine: no working C++ compiler",
    optimization="compile",
    reason="no working C++ compiler",
)


def test_failed_compile_is_turned_off_and_the_rest_of_the_request_kept() -> None:
    """The adjustment changes only the failed switch, and says so in words."""
    switch = OptimisationSwitch()
    parameters = join_parameters(REQUEST, RunOptions(compile=True, vae_tiling=True))
    adjustment = switch.adjust(Classifier(None).categorize(COMPILE_FAILED, {}), parameters)
    assert adjustment is not None
    request, options = split_parameters(adjustment.parameters)
    assert request == REQUEST and options == RunOptions(compile=False, vae_tiling=True)
    assert adjustment.changes == (
        "torch.compile turned off: no working C++ compiler on this machine — the same video, without the speed-up",
    )


def test_later_requests_start_without_the_failed_speed_up() -> None:
    """Once compile failed here, the next request starts with it off and a line saying why."""
    switch = OptimisationSwitch()
    switch.adjust(Classifier(None).categorize(COMPILE_FAILED, {}), join_parameters(REQUEST, RunOptions(compile=True)))
    options, lines = switch.starting_options(RunOptions(compile=True))
    assert options == RunOptions(compile=False)
    assert lines == ["torch.compile left off: it failed on this machine earlier (no working C++ compiler)"]


def test_other_failures_and_switches_already_off_get_no_answer() -> None:
    """Not its failure type, or nothing left to turn off: no adjustment (the next adjuster is asked)."""
    switch = OptimisationSwitch()
    oom = Classifier(None).categorize(OutOfMemoryError("out of memory"), {})
    assert switch.adjust(oom, join_parameters(REQUEST, RunOptions(compile=True))) is None
    failed = Classifier(None).categorize(COMPILE_FAILED, {})
    assert switch.adjust(failed, join_parameters(REQUEST, RunOptions(compile=False))) is None
    assert switch.starting_options(RunOptions(compile=True)) == (RunOptions(compile=True), [])
