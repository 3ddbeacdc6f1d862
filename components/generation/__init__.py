"""What one generation is: the request and its validation, the diffusers adapter, the supervised worker
process, the built-in tiny model, the conditioning image of image-to-video (checked and prepared), the speed-up
switch that recovery turns off when it fails, and the time model behind the ETAs.
"""

from components.generation.embedded_model import (
    EMBEDDED_MODEL_ID,
    MANIFEST_NAME,
    build_embedded_model,
    ensure_embedded_model,
    read_manifest,
    verify_manifest,
)
from components.generation.images import (
    ImageLimits,
    ImageUse,
    attach_image,
    check_image_use,
    image_use,
    prepare_image,
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
    "ImageLimits",
    "ImageUse",
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
    "attach_image",
    "build_embedded_model",
    "check_image_use",
    "ensure_embedded_model",
    "image_use",
    "join_parameters",
    "prepare_image",
    "read_manifest",
    "release_memory",
    "resolve_device",
    "split_parameters",
    "validate_request",
    "verify_manifest",
]
