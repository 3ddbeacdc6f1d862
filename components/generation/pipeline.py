"""The diffusers adapter: one video generation as numbered steps, for every family in
``components.generation.families`` (what differs between pipelines is the family's; the steps are here).

    1. check inputs        (the family's shape rules, which the pipelines themselves check weakly or not at all;
                            an image for image-to-video families, none for text-to-video ones)
    2. ensure model        (the family from model_index.json, checked against the components' configs before
                            anything loads; load once, keep warm; a different model id reloads)
    3. apply memory plan   (named switches, all off until asked for)
    4. denoise             (``output_type="latent"``, progress and cancellation per step)
    5. keep latents        (so a decode that runs out of memory is retried without denoising again)
    6. decode              (VAE → uint8 frames, progress and cancellation per decoder chunk; NaN/black frames are
                            a failure, not a result, and so are flat grey frames)
    7. export              (mp4 written beside, then renamed into place)

A streamed decode (``RunOptions.streamed_decode``, the memory ladder's retry of a decode out-of-memory from the
kept latents) runs 6 and 7 at once: each chunk the family's VAE decodes is post-processed and written a few frames
at a time, so neither the whole float video nor its copies are held (on CUDA the transformers and encoders also
wait in host memory meanwhile); the frames are the plain decode's.

This module runs inside the worker process (``components.generation.worker``) but works in-process too (notebooks,
benchmarks). Allocator failures leave here as ``recovery.errors.OutOfMemoryError`` carrying the phase and the
bytes requested, so that they cross the process boundary as data.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from components.generation.families import Family, family_of_folder
from components.generation.optimisations import MemorySwitches
from components.generation.precision import PrecisionChoice
from components.generation.request import GenerationOutput, GenerationRequest, RunOptions
from components.system.files import replacing
from components.system.gpu import cuda_memory_evidence, oom_cause, other_processes_bytes
from recovery.classify import classify_exception
from recovery.errors import (
    BadOutputError,
    DependencyMissingError,
    GenerationCancelledError,
    HardwareOptimizationError,
    InvalidParameterError,
    OutOfMemoryError,
    StorageFullError,
    UnsupportedOperationError,
)
from recovery.procfs import process_status, reset_peak_rss
from recovery.taxonomy import EnhancedFailureType

__all__ = ["VideoGenerator", "WanGenerator", "copy_out_of_files", "release_memory", "resolve_device"]

StepCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]
_CPU_ALLOC_BYTES = re.compile(r"you tried to allocate (\d+) bytes")
# torch on CUDA ("Tried to allocate 2.00 GiB") and numpy ("Unable to allocate 12.0 MiB for an array with shape ...")
_SIZED_ALLOC = re.compile(r"(?:Tried|Unable) to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB|PiB)")
_UNIT = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}
_FRAMES_PER_WRITE = 4  # a streamed decode post-processes and writes this many frames at a time


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a CUDA device is usable, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in {"cpu", "cuda"}:
        raise InvalidParameterError(
            f"`device` must be auto, cpu or cuda (got {device!r})",
            parameter="device",
            value=device,
            constraint="auto|cpu|cuda",
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise UnsupportedOperationError(
            "`device` cuda was asked for but no CUDA device is available (got 'cuda')",
            operation="device=cuda",
            reason="no CUDA device",
        )
    return device


def release_memory(pipe: Any = None) -> None:
    """Give memory back after a failure: VAE feature cache, Python garbage, CUDA cache, glibc's free lists."""
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "clear_cache"):
        vae.clear_cache()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def copy_out_of_files(pipe: Any, model_path: str | os.PathLike[str]) -> int:
    """Copy every host tensor of ``pipe`` that is a view into one of the model's mapped weight files (safetensors
    and transformers map the files and hand out views whenever no dtype cast copies a tensor: fp32 weights run in
    fp32, the fp32 modules a family keeps, a bf16 file run in bf16) into memory of its own; returns the bytes
    copied. A file truncated while such a view lives kills the process with SIGBUS at the next touch of a page
    past the new end; after the copy the maps are dropped and the process no longer reads the files. Weights on a
    device are not views (CUDA without an offload hook drops the host copies when it places them)."""
    files: set[str] = set()
    for root, _dirs, names in os.walk(model_path, followlinks=True):
        files.update(os.path.realpath(os.path.join(root, name)) for name in names)
    spans = _mapped_spans(files)
    if not spans:
        return 0
    import torch

    def mapped(tensor: Any) -> bool:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
            return False
        address = tensor.data_ptr()
        return any(start <= address < end for start, end in spans)

    copied, seen = 0, set()
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
                if tensor is None or id(tensor) in seen or not mapped(tensor):
                    continue
                seen.add(id(tensor))
                copied += tensor.numel() * tensor.element_size()
                if name in module._parameters:
                    tensor.data = tensor.data.clone()  # the same Parameter object: tied weights stay tied
                else:
                    module._buffers[name] = tensor.clone()
    return copied  # the last views gone (no cycles hold them), safetensors has unmapped the files


def _mapped_spans(files: set[str]) -> list[tuple[int, int]]:
    """The address ranges this process maps from ``files`` (real paths), from ``/proc/self/maps``."""
    spans = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in files:
                    start, end = fields[0].split("-")
                    spans.append((int(start, 16), int(end, 16)))
    except OSError:  # not Linux: nothing to tell mapped from owned memory by
        return []
    return spans


def _oom_from(
    exc: BaseException, phase: str, device: str, steps: int, latents_kept: bool, memory_cap: int | None
) -> OutOfMemoryError | None:
    """The allocator's refusal as our typed error, with the bytes its message names; None if not an OOM.

    Whether it *is* an out-of-memory is the classifier's call (torch's OOM type, ``MemoryError``, the CPU
    allocator's and oneDNN's messages), so the one message table decides here too.
    """
    if classify_exception(exc).failure_type is not EnhancedFailureType.VRAM_EXHAUSTION:
        return None
    text = str(exc)
    requested: int | None = None
    if match := _CPU_ALLOC_BYTES.search(text):
        requested = int(match.group(1))
    elif match := _SIZED_ALLOC.search(text):
        requested = int(float(match.group(1)) * _UNIT[match.group(2)])
    evidence: dict[str, Any] = {}
    reason = cause = None
    if device == "cuda":  # read here, in the process that ran out: the app's view would count this one as "other"
        evidence = {**cuda_memory_evidence(), "gpu_other_processes_bytes": other_processes_bytes()}
        reason, cause = oom_cause(evidence) or (None, None)
    return OutOfMemoryError(
        f"out of memory during {phase}" + (f": {cause}" if cause else ""),
        phase=phase,
        bytes_requested=requested,
        device=device,
        memory_cap=memory_cap,
        steps_completed=steps,
        latents_kept=latents_kept,
        reason=reason,
        cause=cause,
        **evidence,
    )


class _PeakMemory:
    """Peak memory of one run: CUDA's peak counter, or the process's peak RSS (VmHWM, reset per run)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            return
        reset_peak_rss()

    def read(self) -> int | None:
        if self.device == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        try:
            return process_status("VmHWM").get("VmHWM")
        except OSError:
            return None


def _latent_key(request: GenerationRequest) -> tuple:
    """Everything that decides the denoised latents (not fps, which only matters at export)."""
    return (
        request.model_id,
        request.prompt,
        request.negative_prompt,
        request.width,
        request.height,
        request.num_frames,
        request.steps,
        request.guidance_scale,
        request.seed,
        request.image,
    )


class VideoGenerator:
    """A warm diffusers video pipeline of any supported family, plus the latents of the last denoising run."""

    def __init__(
        self, *, device: str = "auto", dtype: str = "bfloat16", precision: PrecisionChoice | None = None
    ) -> None:
        self.device = resolve_device(device)
        self.dtype_name = dtype
        # A dtype per component where the hardware is slow in ``dtype`` (the worker probes: generation.precision)
        self.precision = precision or PrecisionChoice(dtype)
        if dtype == "float16" and self.device == "cpu":
            raise UnsupportedOperationError(
                "`dtype` float16 is not supported on the CPU (got 'float16'); use bfloat16 or float32",
                operation="dtype=float16",
                reason="cpu",
            )
        self.memory_cap: int | None = None  # set by whoever capped this process, reported with an OOM
        self.pipe: Any = None
        self.model_id: str | None = None
        self.family: Family | None = None
        self._offloaded = False
        self.switches = MemorySwitches()  # group offload, layerwise casting, sequential offload: hooks on the pipe
        self._eager_transformer: Any = None  # the transformer as loaded, while a compiled one stands in for it
        self._compiled_transformer: Any = None
        self._latents: tuple[tuple, Any] | None = None
        self.denoise_steps_run = 0  # counts every denoising step this process has run (proves decode-only retries)
        self.weights_copied_from_files = 0  # bytes of the last load's weights copied out of their mapped files

    # -- step 2: ensure model -------------------------------------------------------------------------------------
    def load(self, model_path: str | os.PathLike[str], model_id: str, options: RunOptions | None = None) -> float:
        """Load (or keep) the pipeline for ``model_id`` from a local folder; return seconds spent loading. The
        memory switches of ``options`` that hook the pipeline are applied before it is placed on the device."""
        if self.pipe is not None and self.model_id == model_id:
            return 0.0
        import torch

        family = family_of_folder(model_path, model_id)  # refuses a folder whose class does not fit, before loading
        self.unload()
        started = time.perf_counter()
        pipe = family.load(model_path, getattr(torch, self.dtype_name))
        for component, dtype in self.precision.components.items():
            module = getattr(pipe, component, None)
            if module is not None:
                module.to(dtype=getattr(torch, dtype))
        pipe.set_progress_bar_config(disable=True)
        if self.device == "cpu" or (options is not None and self.switches.places_weights(options)):
            self.weights_copied_from_files = copy_out_of_files(pipe, model_path)  # weights stay in host memory
        if options is not None:
            self.switches.apply(pipe, options, self.device)  # fp8 cast in host memory; offload hooks place weights
        self.pipe = pipe if options is not None and self.switches.places_weights(options) else pipe.to(self.device)
        self.model_id, self.family = model_id, family
        return time.perf_counter() - started

    def unload(self) -> None:
        self.pipe = None
        self.model_id = None
        self.family = None
        self._offloaded = False
        self.switches = MemorySwitches()
        self._eager_transformer = self._compiled_transformer = None
        self._latents = None
        release_memory()

    # -- step 3: memory switches ----------------------------------------------------------------------------------
    def enable_vae_tiling(self, enabled: bool = True) -> None:
        """Decode in spatial tiles: lower peak memory for large frames, slightly slower."""
        assert self.family is not None
        self.family.set_tiling(self.pipe, enabled)

    def enable_model_cpu_offload(self) -> None:
        """Keep each sub-model on the GPU only while it runs (CUDA only)."""
        if self.device != "cuda":
            raise UnsupportedOperationError(
                "`model_cpu_offload` needs a CUDA device (got device 'cpu')",
                operation="model_cpu_offload",
                reason="cpu",
            )
        if not self._offloaded:
            self.pipe.enable_model_cpu_offload()
            self._offloaded = True

    def enable_compile(self, enabled: bool = True) -> None:
        """Run the transformer through ``torch.compile``; the compile itself happens at the first step (and fails
        there when the machine cannot compile). Turning it off puts the loaded module back."""
        if enabled and self._eager_transformer is None:
            import torch

            self._eager_transformer = self.pipe.transformer
            if self._compiled_transformer is None:
                self._compiled_transformer = torch.compile(self._eager_transformer)
            self.pipe.transformer = self._compiled_transformer
        elif not enabled and self._eager_transformer is not None:
            self.pipe.transformer = self._eager_transformer
            self._eager_transformer = None

    def _apply(self, options: RunOptions) -> None:
        self.enable_vae_tiling(options.vae_tiling)
        if options.model_cpu_offload:
            self.enable_model_cpu_offload()
        self.switches.apply(self.pipe, options, self.device)
        self.enable_compile(options.compile)

    # -- the whole run --------------------------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        output_path: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str],
        options: RunOptions = RunOptions(),
        on_step: StepCallback | None = None,
        on_phase: Callable[[str], None] | None = None,
        should_cancel: CancelCheck | None = None,
        on_decode_step: StepCallback | None = None,
    ) -> GenerationOutput:
        """Run steps 1–7 for ``request`` and write the mp4 to ``output_path``.

        ``on_step(i, n)`` follows the denoising steps and ``on_decode_step(i, n)`` the decoder's chunks (one per
        latent frame, per tile when tiled). ``should_cancel`` is asked after loading, at every denoising step,
        before every decoder chunk and before export; when it says yes the run ends with
        ``GenerationCancelledError`` and its latents are dropped (nobody retries a stopped run)."""
        try:
            return self._generate(
                request, output_path, model_path, options, on_step, on_phase, should_cancel, on_decode_step
            )
        except GenerationCancelledError:
            self._latents = None
            raise

    def _generate(
        self,
        request: GenerationRequest,
        output_path: str | os.PathLike[str],
        model_path: str | os.PathLike[str],
        options: RunOptions,
        on_step: StepCallback | None,
        on_phase: Callable[[str], None] | None,
        should_cancel: CancelCheck | None,
        on_decode_step: StepCallback | None,
    ) -> GenerationOutput:
        timings: dict[str, float] = {}
        phase_hook = on_phase or (lambda _phase: None)
        peak = _PeakMemory(self.device)
        peak.reset()

        # 1. check inputs
        family = self.family if self.pipe is not None and self.model_id == request.model_id else None
        family = family or family_of_folder(model_path, request.model_id)
        family.rules.check(request.width, request.height, request.num_frames, request.steps)
        image = _conditioning_image(family, request)
        if request.seed is None:  # validate_request draws one; a seed makes the video reproducible
            raise InvalidParameterError(
                "`seed` must be set (got None)", parameter="seed", value=None, constraint="0 <= seed < 2**32"
            )
        # 2. ensure model (a pipeline carrying a memory hook this request does not want is loaded afresh)
        if self.pipe is not None and self.switches.needs_reload(options, model_offloaded=self._offloaded):
            self.unload()
        self.switches.check(options, self.device)  # a CUDA-only switch on the CPU is refused before loading
        phase_hook("load")
        timings["load"] = self._run_phase("load", [0], False, lambda: self.load(model_path, request.model_id, options))
        # 3. apply memory plan
        self._apply(options)
        steps_done = [0]
        _stop_if_cancelled(should_cancel, "load", steps_done[0])
        # 4–5. denoise, keeping the latents
        key = _latent_key(request)
        denoise_skipped = self._latents is not None and self._latents[0] == key
        if denoise_skipped:
            timings["denoise"] = 0.0
            steps_done[0] = request.steps
        else:
            phase_hook("denoise")
            started = time.perf_counter()
            latents = self._run_phase(
                "denoise",
                steps_done,
                False,
                lambda: self._denoise(request, image, steps_done, on_step, should_cancel),
            )
            timings["denoise"] = time.perf_counter() - started
            self._latents = (key, latents)
        assert self._latents is not None
        latents = self._latents[1]
        # 6. decode
        phase_hook("decode")
        started = time.perf_counter()
        if options.streamed_decode:  # 6–7 at once: each decoded chunk goes to the mp4 writer as it comes
            written = self._run_phase(
                "decode",
                steps_done,
                True,
                lambda: self._decode_to_mp4(
                    latents, request, Path(output_path), on_decode_step, should_cancel, steps_done[0]
                ),
            )
            digest, shape, timings["export"] = written
            timings["decode"] = time.perf_counter() - started - timings["export"]
        else:
            frames = self._run_phase(
                "decode",
                steps_done,
                True,
                lambda: self._decode(latents, request, on_decode_step, should_cancel, steps_done[0]),
            )
            timings["decode"] = time.perf_counter() - started
            _stop_if_cancelled(should_cancel, "decode", steps_done[0])
            # 7. export
            phase_hook("export")
            started = time.perf_counter()
            digest = hashlib.sha256(frames.tobytes()).hexdigest()
            shape = tuple(int(n) for n in frames.shape[:3])
            _export_mp4(frames, Path(output_path), request.fps)
            timings["export"] = time.perf_counter() - started
            del frames
        self._latents = None  # delivered: the next request starts clean
        return GenerationOutput(
            video_path=os.fspath(output_path),
            request=request,
            options=options,
            timings=timings,
            peak_memory_bytes=peak.read(),
            device=self.device,
            dtype=self.dtype_name,
            frames=shape[0],
            height=shape[1],
            width=shape[2],
            frames_sha256=digest,
            steps_completed=steps_done[0],
            denoise_skipped=denoise_skipped,
            model_id=request.model_id,
            component_dtypes={
                name: str(getattr(self.pipe, name).dtype).removeprefix("torch.")
                for name in self.precision.components
                if getattr(self.pipe, name, None) is not None
            },
            precision_note=self.precision.reason,
        )

    def _run_phase(self, phase: str, steps_done: list[int], latents_kept: bool, call: Callable[[], Any]) -> Any:
        """Run one phase; an allocator failure leaves as ``OutOfMemoryError`` after memory was released."""
        typed: OutOfMemoryError | None = None
        try:
            return call()
        except GenerationCancelledError:  # a RuntimeError, but a choice: not the classifier's to judge
            raise
        except (RuntimeError, MemoryError) as exc:
            typed = _oom_from(exc, phase, self.device, steps_done[0], latents_kept, self.memory_cap)
            if typed is None:
                raise
            typed.__cause__ = exc
        # Outside the except block the failed frames are unreachable, so their memory can really be returned.
        release_memory(self.pipe)
        raise typed

    def _denoise(
        self,
        request: GenerationRequest,
        image: Any,
        steps_done: list[int],
        on_step: StepCallback | None,
        should_cancel: CancelCheck | None,
    ) -> Any:
        import torch

        def step_end(pipe: Any, index: int, _timestep: Any, callback_kwargs: dict) -> dict:
            steps_done[0] = index + 1
            self.denoise_steps_run += 1
            if on_step is not None:
                on_step(index + 1, request.steps)
            _stop_if_cancelled(should_cancel, "denoise", index + 1)
            return callback_kwargs

        assert self.family is not None
        generator = torch.Generator(device="cpu").manual_seed(int(request.seed or 0))
        try:
            with _quiet_diffusers():
                latents = self.family.denoise(self.pipe, request, image, generator, step_end)
        except Exception as exc:
            if self._eager_transformer is None or not _is_compile_failure(exc):
                raise
            self.enable_compile(False)  # the compiled module stays broken here; the next run starts eager
            self._compiled_transformer = None
            reason = _compile_reason(exc)
            raise HardwareOptimizationError(
                f"torch.compile failed on this machine: {reason}",
                optimization="compile",
                reason=reason,
                phase="denoise",
                steps_completed=steps_done[0],
            ) from exc
        if not bool(torch.isfinite(latents).all()):
            raise BadOutputError(
                "the denoised latents contain NaN or infinite values", reason="non-finite latents", phase="denoise"
            )
        return latents

    def _decode(
        self,
        latents: Any,
        request: GenerationRequest,
        on_chunk: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        steps_completed: int = 0,
    ) -> Any:
        """Latents → uint8 frames (F, H, W, 3), exactly as the family's pipeline decodes them.

        Hooks on the VAE's decoder report each chunk it decodes (Wan's decodes one latent frame at a time, per tile
        when tiled) and stop before the next one when cancelled, so the arithmetic, and the frames, are the VAE's
        own."""
        import numpy as np
        import torch

        family = self.family
        assert family is not None
        with self._decoder_hooks(latents, request, on_chunk, should_cancel, steps_completed), torch.no_grad():
            video = family.decode(self.pipe, latents, request)
        with torch.no_grad():
            video = self.pipe.video_processor.postprocess_video(video, output_type="np")[0]
        if not np.isfinite(video).all():
            raise BadOutputError(
                "the decoded frames contain NaN or infinite values", reason="non-finite frames", phase="decode"
            )
        frames = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
        if frames.max() == 0:
            raise BadOutputError("every decoded frame is black", reason="black frames", phase="decode")
        if video.std() == 0:  # a VAE below its tile size can decode silently to one flat grey (Allegro, measured)
            raise BadOutputError("every decoded frame is one flat colour", reason="flat frames", phase="decode")
        return frames

    @contextmanager
    def _decoder_hooks(
        self,
        latents: Any,
        request: GenerationRequest,
        on_chunk: StepCallback | None,
        should_cancel: CancelCheck | None,
        steps_completed: int,
    ) -> Iterator[None]:
        """Progress after, and the cancel check before, each call of the family's decoder module."""
        family = self.family
        assert family is not None
        decoder = family.decoder(self.pipe)
        total = family.decoder_chunks(self.pipe, tuple(latents.shape), request)
        done = [0]

        def before_chunk(_module: Any, _args: Any) -> None:
            _stop_if_cancelled(should_cancel, "decode", steps_completed)

        def after_chunk(_module: Any, _args: Any, _output: Any) -> None:
            done[0] += 1
            if on_chunk is not None:
                on_chunk(done[0], max(total, done[0]))

        hooks = [decoder.register_forward_pre_hook(before_chunk), decoder.register_forward_hook(after_chunk)]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @contextmanager
    def _only_vae_on_device(self) -> Iterator[None]:
        """On CUDA the other modules (transformers, encoders) wait in host memory while a streamed decode runs —
        the Wan 2.1 1.3B transformer alone holds 2.84 GB there — and come back after it. Nothing moves on the CPU
        (one memory) or under model offload (its hooks move the modules). Not yet run on a GPU."""
        if self.device != "cuda" or self._offloaded:
            yield
            return
        import torch

        parked = [
            module
            for name, module in self.pipe.components.items()
            if name != "vae" and isinstance(module, torch.nn.Module)
        ]
        for module in parked:
            module.to("cpu")
        torch.cuda.empty_cache()
        try:
            yield
        finally:
            for module in parked:
                module.to(self.device)

    def _decode_to_mp4(
        self,
        latents: Any,
        request: GenerationRequest,
        path: Path,
        on_chunk: StepCallback | None,
        should_cancel: CancelCheck | None,
        steps_completed: int,
    ) -> tuple[str, tuple[int, int, int], float]:
        """``_decode`` and the export in one pass: each chunk the family's VAE decodes (``decode_stream``) is
        post-processed and written ``_FRAMES_PER_WRITE`` frames at a time, so neither the whole float video nor
        its post-processed copies exist at once — the same frames (per-frame arithmetic), the same checks, the
        same digest. With VAE tiling on, the family's ``stream_tiles`` sizes the tiles from the frame (the VAE's
        own tiles are sized for real resolutions and would not split a small one): the frames are then those of
        the pipeline's own decode with those tiles. Returns (frames' sha256, (frames, height, width), seconds
        spent writing)."""
        import numpy as np
        import torch

        family = self.family
        assert family is not None
        digest, shape = hashlib.sha256(), [0, 0, 0]
        brightest, low, high = 0, float("inf"), float("-inf")
        with _mp4_writer(path, request.fps) as writer:
            with (
                self._only_vae_on_device(),
                family.stream_tiles(self.pipe, request),  # tiles that split this frame, when tiling is on
                self._decoder_hooks(latents, request, on_chunk, should_cancel, steps_completed),
                torch.no_grad(),
            ):
                for video in family.decode_stream(self.pipe, latents, request):
                    for start in range(0, int(video.shape[2]), _FRAMES_PER_WRITE):
                        part = video[:, :, start : start + _FRAMES_PER_WRITE]
                        floats = self.pipe.video_processor.postprocess_video(part, output_type="np")[0]
                        if not np.isfinite(floats).all():
                            raise BadOutputError(
                                "the decoded frames contain NaN or infinite values",
                                reason="non-finite frames",
                                phase="decode",
                            )
                        low, high = min(low, float(floats.min())), max(high, float(floats.max()))
                        frames = (np.clip(floats, 0.0, 1.0) * 255).round().astype(np.uint8)
                        del floats
                        brightest = max(brightest, int(frames.max()))
                        digest.update(frames.tobytes())
                        shape = [shape[0] + int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])]
                        writer.append(frames)
                    video = part = None  # freed before the next chunk is decoded
            if brightest == 0:
                raise BadOutputError("every decoded frame is black", reason="black frames", phase="decode")
            if low == high:  # std 0: one flat colour (see ``_decode``)
                raise BadOutputError("every decoded frame is one flat colour", reason="flat frames", phase="decode")
            _stop_if_cancelled(should_cancel, "decode", steps_completed)
        return digest.hexdigest(), (shape[0], shape[1], shape[2]), writer.seconds


#: The name every caller used while Wan was the only family.
WanGenerator = VideoGenerator


def _conditioning_image(family: Family, request: GenerationRequest) -> Any:
    """The request's image as the pipeline takes it (RGB, already at the request's size), or None; an image
    where the family takes none, or none where it needs one, is refused naming ``image``."""
    if request.image is None:
        if family.needs_image:
            raise InvalidParameterError(
                f"`image` is required: {family.label} makes a video from an image (got no image)",
                parameter="image",
                value=None,
                constraint="an image",
            )
        return None
    if not family.takes_image:
        raise InvalidParameterError(
            f"`image` is not taken by {family.label}, a text-to-video model (got an image)",
            parameter="image",
            value="<image>",
            constraint="no image",
        )
    from PIL import Image

    with Image.open(request.image) as opened:
        return opened.convert("RGB")


def _stop_if_cancelled(should_cancel: CancelCheck | None, phase: str, steps_completed: int) -> None:
    if should_cancel is not None and should_cancel():
        raise GenerationCancelledError("generation cancelled", phase=phase, steps_completed=steps_completed)


def _is_compile_failure(exc: BaseException) -> bool:
    """A failure of dynamo or inductor (tracing, code generation, the C++/Triton compiler) — not of the model."""
    import torch._dynamo.exc

    return isinstance(exc, torch._dynamo.exc.TorchDynamoException)


def _compile_reason(exc: BaseException) -> str:
    """The first line that says why (``InvalidCxxCompiler: No working C++ compiler found …``), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if any("no working c++ compiler" in line.lower() for line in lines):
        return "no working C++ compiler"
    if any("triton" in line.lower() for line in lines):
        return "Triton is missing or does not support this GPU"
    return (lines[0] if lines else type(exc).__name__)[:200]


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' per-call warnings (e.g. rounding notices we already reported as corrections)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


class _Mp4Frames:
    """An open mp4 writer: ``append`` frames ``(F, H, W, 3)`` uint8; counts the seconds spent writing, the raw
    bytes handed to it, and keeps the writer's own failure (to tell it from a failure of the decode around it)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.seconds = 0.0
        self.nbytes = 0
        self.failure: Exception | None = None

    def append(self, frames: Any) -> None:
        started = time.perf_counter()
        try:
            for frame in frames:
                self.nbytes += int(getattr(frame, "nbytes", 0))
                self.writer.append_data(frame)
        except (OSError, RuntimeError) as exc:
            self.failure = exc
            raise
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        started = time.perf_counter()
        try:
            self.writer.close()
        except (OSError, RuntimeError) as exc:
            self.failure = self.failure or exc
            raise
        finally:
            self.seconds += time.perf_counter() - started


@contextmanager
def _mp4_writer(path: Path, fps: int) -> Iterator[_Mp4Frames]:
    """An H.264 mp4 written beside its final name, checked whole, and renamed into place when the block ends
    normally (a reader never sees half a file); when the block raises, the partial file is removed.

    ffmpeg on a full disk either breaks the pipe or exits quietly after a truncated write (imageio does not check
    its exit status), so the written file's boxes are checked before the rename; a writer failure or an incomplete
    file with too little space left is ``StorageFullError``."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the writer below needs its bundled ffmpeg)
    except ImportError as exc:
        raise DependencyMissingError(
            "the mp4 writer is not installed", package="imageio-ffmpeg", install="pip install imageio imageio-ffmpeg"
        ) from exc
    with replacing(path) as partial:
        writer = _Mp4Frames(
            imageio.get_writer(
                partial,
                format="FFMPEG",
                mode="I",
                fps=fps,
                codec="libx264",
                quality=8,
                pixelformat="yuv420p",
                macro_block_size=16,
                ffmpeg_log_level="error",
            )
        )
        try:
            yield writer
        except BaseException as exc:
            with suppress(Exception):  # the block's own error is the one to report
                writer.close()
            if exc is writer.failure:
                _refuse_incomplete(partial, path, writer)
            raise
        try:
            writer.close()
        except (OSError, RuntimeError):
            _refuse_incomplete(partial, path, writer)
        if not _mp4_is_whole(partial):
            _refuse_incomplete(partial, path, writer)


def _refuse_incomplete(partial: Path, path: Path, writer: _Mp4Frames) -> NoReturn:
    """Why the mp4 was not saved: a full disk (less free than the raw frames written: an H.264 mp4 is far smaller
    than what it encodes), else the writer's own error, else an incomplete file."""
    free = shutil.disk_usage(partial.parent).free
    if free < writer.nbytes:
        raise StorageFullError(
            f"the disk filled up while writing the video ({free} bytes free): it was not saved",
            path=path.name,
            bytes_free=free,
        ) from writer.failure
    if writer.failure is not None:
        raise writer.failure
    raise BadOutputError("the mp4 writer left an incomplete file", reason="mp4_incomplete", phase="export")


def _mp4_is_whole(path: Path) -> bool:
    """The file's top-level boxes follow one another to its exact end and include ``moov`` and ``mdat``: a
    truncated mp4 (a box running past the end, no index) is not whole."""
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return False
    seen, offset = set(), 0
    with path.open("rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(16)
            box = int.from_bytes(header[:4], "big") if len(header) >= 8 else 0
            if box == 1 and len(header) == 16:
                box = int.from_bytes(header[8:16], "big")
            if box < 8:
                return False
            seen.add(header[4:8])
            offset += box
    return offset == size and {b"moov", b"mdat"} <= seen


def _export_mp4(frames: Any, path: Path, fps: int) -> None:
    """Write an H.264 mp4 of all ``frames`` (see ``_mp4_writer``)."""
    with _mp4_writer(path, fps) as writer:
        writer.append(frames)
