"""What every model family tells the generator: its shape rules (as data), how to recognise its folders, how to
call its pipeline, how to decode its kept latents, and how to build its tiny random-weight model.

The generator (``components.generation.pipeline``) owns the steps (check → load → denoise → keep latents → decode
→ export); a ``Family`` owns only what differs between diffusers pipelines. One subclass per family, in one module
per family beside this one; the registry (``components.generation.families``) lists them.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from recovery.errors import InvalidParameterError, ModelCompatibilityError

__all__ = ["Family", "ModelFolder", "ShapeRules", "StepEnd", "Task", "class_mismatch", "refuse_image_channels"]

#: ``callback_on_step_end(pipe, index, timestep, callback_kwargs) -> callback_kwargs`` as diffusers calls it.
StepEnd = Callable[[Any, int, Any, dict], dict]


class Task(str, Enum):
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"


@dataclass(frozen=True)
class ShapeRules:
    """The shapes a family really runs at. The pipelines' own checks are weaker (measured: Wan 2.2 5B checks ÷16
    and silently returns smaller frames unless sides are ÷32; LTX and HunyuanVideo floor frame counts silently), so
    every request is brought to these rules first and each change is reported."""

    side_multiple: int = 16  # width and height divisible by this
    frame_multiple: int = 4  # num_frames = frame_multiple * k + 1
    min_steps: int = 1
    label: str = "Wan"  # who needs it, in the correction line: "(Wan needs sides divisible by 16)"

    def frames_ok(self, frames: int) -> bool:
        return (frames - 1) % self.frame_multiple == 0

    def sides_ok(self, width: int, height: int) -> bool:
        return width % self.side_multiple == 0 and height % self.side_multiple == 0

    def check(self, width: int, height: int, frames: int, steps: int) -> None:
        """Refuse a shape this family cannot run, naming the parameter, the value and the rule."""
        for name, value in (("width", width), ("height", height)):
            if value % self.side_multiple:
                raise InvalidParameterError(
                    f"`{name}` must be divisible by {self.side_multiple} for {self.label} (got {value})",
                    parameter=name,
                    value=value,
                    constraint=f"divisible by {self.side_multiple}",
                )
        if not self.frames_ok(frames):
            raise InvalidParameterError(
                f"`num_frames` must be {self.frame_multiple}k+1 for {self.label} (got {frames})",
                parameter="num_frames",
                value=frames,
                constraint=f"{self.frame_multiple}k+1",
            )
        if steps < self.min_steps:
            raise InvalidParameterError(
                f"`steps` must be at least {self.min_steps} for {self.label} (got {steps})",
                parameter="steps",
                value=steps,
                constraint=f">= {self.min_steps}",
            )


@dataclass(frozen=True)
class ModelFolder:
    """A model folder's ``model_index.json`` and, on demand, its components' ``config.json`` (no weights read)."""

    path: Path
    index: Mapping[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ModelFolder:
        folder = Path(path)
        return cls(folder, json.loads((folder / "model_index.json").read_text()))

    @property
    def class_name(self) -> str:
        return str(self.index.get("_class_name", ""))

    def has(self, component: str) -> bool:
        """The index names a component and it is not null (``[null, null]`` is how a missing one is saved)."""
        entry = self.index.get(component)
        return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None

    def config(self, component: str) -> dict[str, Any]:
        try:
            return dict(json.loads((self.path / component / "config.json").read_text()))
        except (OSError, ValueError):
            return {}


class Family(ABC):
    """A diffusers video pipeline family. Class attributes are data; methods have the behaviour most families
    share, overridden where a family differs; ``decode`` and ``build_tiny`` differ for every family, so each
    family must define them (an incomplete family cannot be instantiated, let alone registered)."""

    name: ClassVar[str]  # stable id: "wan2.1-t2v"
    label: ClassVar[str]  # for people: "Wan 2.1 text-to-video"
    pipeline_class: ClassVar[str]  # diffusers class name in model_index.json
    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_TO_VIDEO,)
    rules: ClassVar[ShapeRules] = ShapeRules()
    tiny_model_id: ClassVar[str]
    #: Hub ids known to be of this family (the catalogue's entries), so rules apply before anything is downloaded.
    known_models: ClassVar[tuple[str, ...]] = ()
    supports_tiling: ClassVar[bool] = True
    supports_offload: ClassVar[bool] = True  # enable_model_cpu_offload (CUDA only)
    #: The decode retry of a decode out-of-memory streams *tiled* (``stream_tiles``): streaming alone does not
    #: lower this family's decode peak, because one decoder call's working set is the peak and the video's
    #: copies stay below it (``bench/bench_decode.py``; docs/models.md has the figures).
    tiled_decode_retry: ClassVar[bool] = False

    # -- recognising a folder -------------------------------------------------------------------------------------
    def matches(self, folder: ModelFolder) -> bool:
        """This family's folder (the class name, then whatever tells variants of one class apart)."""
        return folder.class_name == self.pipeline_class

    def check_folder(self, folder: ModelFolder) -> None:
        """Refuse a folder whose class does not fit its components *before* the first step. Default: a family
        with one folder layout has nothing to refuse."""
        return None

    # -- requests -------------------------------------------------------------------------------------------------
    @property
    def needs_image(self) -> bool:
        return Task.TEXT_TO_VIDEO not in self.tasks

    @property
    def takes_image(self) -> bool:
        return Task.IMAGE_TO_VIDEO in self.tasks

    def call_arguments(self, request: Any, image: Any | None) -> dict[str, Any]:
        """The pipeline's keyword arguments for ``request`` (besides generator, output type and callback)."""
        arguments: dict[str, Any] = dict(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or None,
            height=request.height,
            width=request.width,
            num_frames=request.num_frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
        )
        if image is not None:
            arguments["image"] = image
        return arguments

    # -- running --------------------------------------------------------------------------------------------------
    def load(self, path: str | os.PathLike[str], dtype: Any) -> Any:
        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        return cls.from_pretrained(os.fspath(path), dtype=dtype, use_safetensors=True)

    def denoise(self, pipe: Any, request: Any, image: Any | None, generator: Any, step_end: StepEnd) -> Any:
        """The denoised latents, as the pipeline returns them with ``output_type="latent"``."""
        return pipe(
            **self.call_arguments(request, image),
            generator=generator,
            output_type="latent",
            callback_on_step_end=step_end,
        ).frames

    @abstractmethod
    def decode(self, pipe: Any, latents: Any, request: Any) -> Any:
        """Kept latents → the VAE's video tensor ``[B, C, F, H, W]`` in ``[-1, 1]``, exactly as the pipeline's own
        call decodes them (tests compare with the pipeline's frames)."""

    def decode_stream(self, pipe: Any, latents: Any, request: Any) -> Iterator[Any]:
        """``decode``'s video as consecutive frame chunks (concatenated along frames they are ``decode``'s
        tensor, value for value), for a decode that hands each chunk to the mp4 writer instead of holding the
        whole video and its copies. Default: one chunk, the whole ``decode`` (the generator still post-processes
        and writes it a few frames at a time); a family whose VAE decodes chunk by chunk yields each chunk."""
        yield self.decode(pipe, latents, request)

    @contextmanager
    def stream_tiles(self, pipe: Any, request: Any) -> Iterator[tuple[int, int] | None]:
        """While a streamed decode runs with VAE tiling on: tiles that really split ``request``'s frame where the
        VAE's own tiles (sized for real resolutions) would not, restored afterwards. Yields the tile size in
        pixels (height, width) the decode uses, or None when it is not tiled. Default: the VAE's tiles as set."""
        yield None

    def decoder(self, pipe: Any) -> Any:
        """The module called once per decoded chunk (hooked for progress and cancel between chunks)."""
        return pipe.vae.decoder

    def decoder_chunks(self, pipe: Any, latent_shape: tuple[int, ...], request: Any) -> int:
        """How many times ``decode`` calls ``decoder``; a guess is fine (progress shows max(guess, done))."""
        return 1

    def set_tiling(self, pipe: Any, enabled: bool) -> None:
        (pipe.vae.enable_tiling if enabled else pipe.vae.disable_tiling)()

    # -- the built-in tiny model ----------------------------------------------------------------------------------
    @abstractmethod
    def build_tiny(self) -> Any:
        """A random-weight pipeline of this family, deterministic, small enough to run on a laptop CPU."""

    def __repr__(self) -> str:
        return f"<family {self.name}>"


def class_mismatch(folder: ModelFolder, family: Family, reason: str) -> ModelCompatibilityError:
    """The error for a folder whose ``model_index.json`` class does not fit its components."""
    return ModelCompatibilityError(
        f"the model's index names {folder.class_name} ({family.label}) but {reason}", model_id=None, reason=reason
    )


def refuse_image_channels(family: Family, folder: ModelFolder, component: str = "transformer") -> None:
    """A transformer that takes more input channels than it denoises wants image latents beside the noise (an
    image-to-video model): under a text-to-video class it loads without complaint and fails at step 1."""
    config = folder.config(component)
    in_channels, out_channels = config.get("in_channels"), config.get("out_channels")
    if in_channels and out_channels and in_channels != out_channels:
        raise class_mismatch(
            folder,
            family,
            f"its {component} takes {in_channels} input channels for {out_channels} latent ones "
            "(an image-to-video model): it cannot run text-to-video",
        )


@contextmanager
def restored(obj: Any, *names: str) -> Iterator[None]:
    """The block may change ``obj``'s attributes ``names``: they get their values back after it (a VAE's tile
    settings changed for one streamed decode)."""
    saved = {name: getattr(obj, name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(obj, name, value)
