"""Kintsugi's video domain: requests, the Wan pipeline adapter, the worker process, the generation service.

Each piece works on its own in a notebook; the web app (``app.py``) only wires them to the page.
"""

from components.generation.embedded_model import (
    EMBEDDED_MODEL_ID,
    build_embedded_model,
    ensure_embedded_model,
    verify_manifest,
)
from components.generation.pipeline import WanGenerator
from components.generation.request import (
    LIMITS,
    GenerationOutput,
    GenerationRequest,
    Limits,
    RunOptions,
    validate_request,
)
from components.generation.worker import Worker, WorkerConfig, WorkerEvent
from components.journal import JournalEntry, RequestJournal, RequestState
from components.service import GenerationService
from components.settings import Settings, parse_bytes
from components.views.reports import GenerationResult, ServiceEvent

__all__ = [
    "EMBEDDED_MODEL_ID",
    "GenerationOutput",
    "GenerationRequest",
    "GenerationResult",
    "GenerationService",
    "JournalEntry",
    "LIMITS",
    "Limits",
    "RequestJournal",
    "RequestState",
    "RunOptions",
    "ServiceEvent",
    "Settings",
    "WanGenerator",
    "Worker",
    "WorkerConfig",
    "WorkerEvent",
    "build_embedded_model",
    "ensure_embedded_model",
    "parse_bytes",
    "validate_request",
    "verify_manifest",
]
