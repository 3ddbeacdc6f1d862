"""Memory: the hardware probe, the calibrated planner, the ladder that lowers a request to fit, and its adapters
to the recovery engine's ports.
"""

from components.memory.adapters import MemoryLadder, PreviewDegrader, WorkerMemoryFreer
from components.memory.calibration import (
    DEFAULT_CALIBRATIONS,
    Measurement,
    calibrate,
    measure_once,
)
from components.memory.hardware import HardwareProbe, cpu_kind, hardware_key, memory_verdict, probe_hardware
from components.memory.ladder import (
    PLAN_CHOICES,
    Choice,
    MemoryPlan,
    PlanNotice,
    PlanOption,
    choose_setting,
    frame_counts,
    plan_memory,
    plan_notice,
    preview_setting,
    scaled_sizes,
)
from components.memory.planner import MemoryPlanner
from components.memory.rungs import RUNGS, ModelWeights, Rung, WeightBook

__all__ = [
    "Choice",
    "DEFAULT_CALIBRATIONS",
    "HardwareProbe",
    "Measurement",
    "MemoryLadder",
    "MemoryPlan",
    "MemoryPlanner",
    "ModelWeights",
    "PLAN_CHOICES",
    "PlanNotice",
    "PlanOption",
    "PreviewDegrader",
    "RUNGS",
    "Rung",
    "WeightBook",
    "WorkerMemoryFreer",
    "calibrate",
    "choose_setting",
    "cpu_kind",
    "frame_counts",
    "hardware_key",
    "measure_once",
    "memory_verdict",
    "plan_memory",
    "plan_notice",
    "preview_setting",
    "probe_hardware",
    "scaled_sizes",
]
