"""The VAE encoder in its own dtype, for image-to-video pipelines that assume one dtype for every component.

The generator may keep the VAE in float32 while the transformer and text encoder run in bfloat16
(``components.generation.precision``: bf16 3D convolutions are very slow on many CPUs). CogVideoX's and LTX-Video's
image-to-video pipelines cast the conditioning image to the prompt embeddings' dtype before ``vae.encode``, so
with such a VAE they fail at once ("Input type (c10::BFloat16) and bias type (float) should be the same",
measured). While ``encoder_in_own_dtype`` is active the encoder casts its input to its own dtype: nothing changes
where the dtypes agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["encoder_in_own_dtype"]


@contextmanager
def encoder_in_own_dtype(vae: Any) -> Iterator[None]:
    """Within the block, ``vae.encoder`` casts its tensor inputs to the VAE's dtype."""
    import torch

    def cast(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(vae.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    hook = vae.encoder.register_forward_pre_hook(cast)
    try:
        yield
    finally:
        hook.remove()
