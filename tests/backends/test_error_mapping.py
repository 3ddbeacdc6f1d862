"""What Ray raises becomes the product's own error at the boundary (``translate_ray_error``), so the classifier
sees a crashed worker, a machine-wide memory shortage or the job's own error — never a Ray type."""

from __future__ import annotations

import pytest

from recovery.classify import classify_exception
from recovery.errors import OutOfMemoryError, WorkerCrashedError

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install kintsugi-video[ray])")

from components.backends.ray_backend import translate_ray_error  # noqa: E402


@pytest.mark.parametrize(
    "raised",
    [
        ray.exceptions.ActorDiedError(),
        ray.exceptions.ActorUnavailableError("the actor is restarting", None),
        ray.exceptions.RayActorError(),
        ray.exceptions.NodeDiedError("node gone"),
    ],
    ids=["actor_died", "actor_unavailable", "actor_error", "node_died"],
)
def test_a_dead_replica_is_a_crashed_worker(raised: BaseException) -> None:
    """A dead actor or node is ``WorkerCrashedError`` naming the replica and phase: a system resource error that
    the engine retries (on another replica)."""
    mapped = translate_ray_error(raised, phase="denoise", replica="replica-1")
    assert isinstance(mapped, WorkerCrashedError) and mapped.phase == "denoise"
    assert "replica-1" in str(mapped) and "denoise" in str(mapped)
    assert classify_exception(mapped).failure_type.value == "system_resource_error"


def test_rays_memory_monitor_is_not_our_out_of_memory() -> None:
    """Ray's ``OutOfMemoryError`` (its monitor killed the replica: the machine ran low) is a crashed worker that
    says so, not the allocator out-of-memory that the memory ladder answers with smaller settings."""
    mapped = translate_ray_error(ray.exceptions.OutOfMemoryError("Task was killed"), phase="decode", replica="r0")
    assert isinstance(mapped, WorkerCrashedError) and not isinstance(mapped, OutOfMemoryError)
    assert "Ray's memory monitor" in str(mapped) and "low on memory" in str(mapped)
    assert classify_exception(mapped).failure_type.value == "system_resource_error"


def test_a_task_error_is_its_cause() -> None:
    """``RayTaskError(X)`` is ``X`` itself, with its fields: our own out-of-memory stays one."""
    ours = OutOfMemoryError("no room", phase="decode", memory_cap=340 * 2**20, steps_completed=2)
    wrapped = ray.exceptions.RayTaskError("generate", "Traceback ...", ours)
    mapped = translate_ray_error(wrapped, phase="decode", replica="r0")
    assert mapped is ours and mapped.memory_cap == 340 * 2**20


def test_other_errors_pass_unchanged() -> None:
    """What is not Ray's crosses as it is."""
    error = ValueError("bad")
    assert translate_ray_error(error, phase="load", replica="r0") is error
