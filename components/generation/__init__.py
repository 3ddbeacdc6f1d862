"""What one generation is: the request and its validation, the diffusers adapter, the supervised worker
process, the built-in tiny model, the speed-up switch that recovery turns off when it fails, and the time model
behind the ETAs.
"""

from components.generation.embedded_model import (
    EMBEDDED_MODEL_ID,
    MANIFEST_NAME,
    build_embedded_model,
    ensure_embedded_model,
    read_manifest,
    verify_manifest,
)
from components.generation.optimisations import OPTIMISATIONS, OptimisationSwitch
from components.generation.pipeline import WanGenerator, release_memory, resolve_device
from components.generation.request import (
    CORRELATION_ID,
    LIMITS,
    MODEL_ID_PATTERN,
    GenerationOutput,
    GenerationRequest,
    Limits,
    RunOptions,
    join_parameters,
    split_parameters,
    validate_request,
)
from components.generation.timing import Eta, EtaClock, PhaseEstimate, TimeModel
from components.generation.worker import Worker, WorkerConfig, WorkerEvent

__all__ = [
    "CORRELATION_ID",
    "EMBEDDED_MODEL_ID",
    "Eta",
    "EtaClock",
    "GenerationOutput",
    "GenerationRequest",
    "LIMITS",
    "Limits",
    "MANIFEST_NAME",
    "MODEL_ID_PATTERN",
    "OPTIMISATIONS",
    "OptimisationSwitch",
    "PhaseEstimate",
    "RunOptions",
    "TimeModel",
    "WanGenerator",
    "Worker",
    "WorkerConfig",
    "WorkerEvent",
    "build_embedded_model",
    "ensure_embedded_model",
    "join_parameters",
    "read_manifest",
    "release_memory",
    "resolve_device",
    "split_parameters",
    "validate_request",
    "verify_manifest",
]
