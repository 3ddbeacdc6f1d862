"""Where generations run: the ``WorkerBackend`` protocol, and the Ray backend that spreads them over replicas."""

from components.backends.protocol import WorkerBackend
from components.backends.ray_backend import (
    RAY_EXTRA,
    RayReplica,
    ReplicaPool,
    ReplicaRuntime,
    connect,
    import_ray,
    translate_ray_error,
)

__all__ = [
    "RAY_EXTRA",
    "RayReplica",
    "ReplicaPool",
    "ReplicaRuntime",
    "WorkerBackend",
    "connect",
    "import_ray",
    "translate_ray_error",
]
