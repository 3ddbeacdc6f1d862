"""LTX-Video, text-to-video (``LTXPipeline``) and image-to-video (``LTXImageToVideoPipeline``): one checkpoint
does both (``Lightricks/LTX-Video`` is the example of both pipelines), so a request with an image runs the
image-to-video pipeline on the loaded pipeline's components, and one without runs text-to-video.

Latents from ``output_type="latent"`` are *packed*: ``[B, S, C]``, one token per latent voxel, so the request's
frame count and size are needed to unpack them (``_unpack_latents``), then they are denormalised
(``_denormalize_latents``) and decoded, all as ``LTXPipeline.__call__`` does.

The VAEs of LTX-Video 0.9.1 and later have ``timestep_conditioning``: their decoder also takes a decode timestep,
and the pipeline first mixes the latents with fresh noise drawn from the call's generator *after* denoising. The
generator has then drawn exactly one tensor, the initial latents (the flow-matching steps draw nothing from it),
so the decode here re-seeds a CPU generator with the request's seed, draws that tensor again and then the noise:
the same noise, hence the same frames, and a decode retried from kept latents gives them again. Image-to-video
draws one more tensor first, the sample of the image's latent distribution; it is replayed too. (Diffusers'
image-to-video decode draws this noise with ``torch.randn`` on the execution device, which a CPU generator cannot
do on CUDA; here it is drawn on the CPU and moved, as ``randn_tensor`` does: the same numbers.) The tiny model's
VAE is 0.9.0-like (no timestep conditioning); the family's tests build a 0.9.1-like VAE to check that path too.

Shape rules, measured: frames are floored silently to ``8k+1`` (the VAE compresses time 8×; 12 frames come back as
9), the pipeline refuses sides not divisible by 32 (its VAE compresses space 32×), and one step fails: LTX-Video's
scheduler stretches its sigmas to ``shift_terminal``, which divides by zero for a single sigma (NaN timesteps, then
an ``IndexError`` in the scheduler's step), so at least 2 steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

from components.generation.families.base import Family, ModelFolder, ShapeRules, StepEnd, Task
from components.generation.families.tokenizers import TEXT_DIM, char_t5_tokenizer, tiny_t5_encoder
from components.generation.families.vae_inputs import encoder_in_own_dtype

__all__ = ["LTXVideo", "ltx_decoder_chunks"]

TINY_LTX_ID = "kintsugi/tiny-ltx-random"
SEED = 20261202
#: Diffusers' advice for timestep-aware VAEs (LTX-Video 0.9.1 and later); a VAE without it ignores both.
DECODE_TIMESTEP = 0.05
DECODE_NOISE_SCALE = 0.025


def ltx_decoder_chunks(vae: Any, latent_shape: tuple[int, ...]) -> int:
    """How many times ``AutoencoderKLLTXVideo.decode`` calls its decoder for unpacked latents ``[B, C, F, H, W]``:
    once, once per spatial tile when tiling applies, once per temporal tile (times its spatial tiles) when
    frame-wise decoding applies (the conditions and strides of its ``_decode``, ``tiled_decode`` and
    ``_temporal_tiled_decode``)."""
    _batch, _channels, frames, height, width = latent_shape
    ratio = vae.spatial_compression_ratio
    min_height, min_width = vae.tile_sample_min_height // ratio, vae.tile_sample_min_width // ratio

    def spatial(tile_height: int, tile_width: int) -> int:
        if not (getattr(vae, "use_tiling", False) and (tile_width > min_width or tile_height > min_height)):
            return 1
        rows = len(range(0, tile_height, vae.tile_sample_stride_height // ratio))
        columns = len(range(0, tile_width, vae.tile_sample_stride_width // ratio))
        return rows * columns

    min_frames = vae.tile_sample_min_num_frames // vae.temporal_compression_ratio
    if getattr(vae, "use_framewise_decoding", False) and frames > min_frames:
        stride = vae.tile_sample_stride_num_frames // vae.temporal_compression_ratio
        return len(range(0, frames, stride)) * spatial(height, width)
    return spatial(height, width)


class LTXVideo(Family):
    name: ClassVar[str] = "ltx"
    label: ClassVar[str] = "LTX-Video"
    pipeline_class: ClassVar[str] = "LTXPipeline"
    #: The same components saved by the image-to-video pipeline name that class in their index.
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"LTXPipeline", "LTXImageToVideoPipeline"})
    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO)
    rules: ClassVar[ShapeRules] = ShapeRules(side_multiple=32, frame_multiple=8, min_steps=2, label="LTX-Video")
    tiny_model_id: ClassVar[str] = TINY_LTX_ID
    known_models: ClassVar[tuple[str, ...]] = (TINY_LTX_ID, "Lightricks/LTX-Video")

    def matches(self, folder: ModelFolder) -> bool:
        return folder.class_name in self.pipeline_classes

    def call_arguments(self, request: Any, image: Any | None) -> dict[str, Any]:
        return {
            **super().call_arguments(request, image),
            "frame_rate": request.fps,  # the transformer's rotary positions scale time by it
            "decode_timestep": DECODE_TIMESTEP,
            "decode_noise_scale": DECODE_NOISE_SCALE,
        }

    def denoise(self, pipe: Any, request: Any, image: Any | None, generator: Any, step_end: StepEnd) -> Any:
        """Text-to-video on ``pipe``; with an image, image-to-video on ``pipe``'s components."""
        runner = pipe if image is None else image_to_video(pipe)
        with encoder_in_own_dtype(pipe.vae):  # image-to-video encodes the image in the prompt's dtype
            return runner(
                **self.call_arguments(request, image),
                generator=generator,
                output_type="latent",
                callback_on_step_end=step_end,
            ).frames

    def decode(self, pipe: Any, latents: Any, request: Any) -> Any:
        """``LTXPipeline.__call__``'s decode (the image-to-video one is the same), step for step, from the packed
        latents and the request's shape."""
        import torch

        with torch.no_grad():
            shape = _latent_shape(pipe, request)
            latents = pipe._unpack_latents(
                latents, *shape[2:], pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
            )
            vae = pipe.vae
            latents = pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
            latents = latents.to(pipe.text_encoder.dtype)  # the pipeline casts to its prompt embeddings' dtype
            timestep = None
            if vae.config.timestep_conditioning:
                timestep, latents = _noised_for_decode(pipe, latents, request, shape)
            return vae.decode(latents.to(vae.dtype), timestep, return_dict=False)[0]

    def decoder_chunks(self, pipe: Any, latent_shape: tuple[int, ...], request: Any) -> int:
        return ltx_decoder_chunks(pipe.vae, _latent_shape(pipe, request))

    def build_tiny(self) -> Any:
        return build_tiny_ltx()


def image_to_video(pipe: Any) -> Any:
    """An ``LTXImageToVideoPipeline`` sharing ``pipe``'s components (no weights copied)."""
    from diffusers import LTXImageToVideoPipeline

    if isinstance(pipe, LTXImageToVideoPipeline):
        return pipe
    runner: Any = LTXImageToVideoPipeline(**pipe.components)
    runner.set_progress_bar_config(disable=True)
    return runner


def _latent_shape(pipe: Any, request: Any) -> tuple[int, int, int, int, int]:
    """``[B, C, F, H, W]`` of the unpacked latents, as ``LTXPipeline.__call__`` computes them from the request."""
    frames = (request.num_frames - 1) // pipe.vae_temporal_compression_ratio + 1
    height = request.height // pipe.vae_spatial_compression_ratio
    width = request.width // pipe.vae_spatial_compression_ratio
    return (1, int(pipe.transformer.config.in_channels), frames, height, width)


def _noised_for_decode(pipe: Any, latents: Any, request: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The decode timestep and the latents mixed with the pipeline's decode noise (see the module docstring)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    device = pipe._execution_device
    generator = torch.Generator(device="cpu").manual_seed(int(request.seed or 0))
    if request.image is not None:  # the sample of the image's latent distribution (one latent frame)
        randn_tensor((*shape[:2], 1, *shape[3:]), generator=generator, device=device, dtype=pipe.vae.dtype)
    randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)  # the initial latents' draw
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    timestep = torch.tensor([DECODE_TIMESTEP], device=device, dtype=latents.dtype)
    scale = torch.tensor([DECODE_NOISE_SCALE], device=device, dtype=latents.dtype)[:, None, None, None, None]
    return timestep, (1 - scale) * latents + scale * noise


def build_tiny_ltx(*, timestep_conditioning: bool = False) -> Any:  # -> diffusers.LTXPipeline
    """A random-weight LTX-Video with the real models' compression (32× space, 8× time, patch 1), so the tiny
    model follows the real shape rules; seeded and in eval mode. ``timestep_conditioning=True`` gives a
    0.9.1-like VAE (for tests; the built-in tiny model is 0.9.0-like)."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    tokenizer = char_t5_tokenizer()
    torch.manual_seed(SEED)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=TEXT_DIM,
    )
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=timestep_conditioning,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    torch.manual_seed(SEED + 2)
    text_encoder = tiny_t5_encoder(len(tokenizer))
    # LTX-Video's scheduler configuration (its shift_terminal is why one step fails).
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    modules: tuple[Any, ...] = (transformer, vae, text_encoder)
    for module in modules:  # modules built in memory start in training mode
        module.eval()
    return LTXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
