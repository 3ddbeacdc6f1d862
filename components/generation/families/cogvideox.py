"""CogVideoX, text-to-video (``CogVideoXPipeline``) and image-to-video (``CogVideoXImageToVideoPipeline``, its own
weights: the transformer takes the image's latents as extra input channels).

Latents are ``[B, F, C, H, W]`` (frames before channels); the pipeline decodes them as ``decode_latents`` does:
permute to ``[B, C, F, H, W]``, multiply by ``1 / scaling_factor``, ``vae.decode``. CogVideoX 1.5 pads the latent
frames to a multiple of the transformer's ``patch_size_t`` and drops the padding before decoding; the decode here
drops it the same way.

Shape rules, measured: the VAE turns ``L`` latent frames into ``4L`` frames when ``L`` is even and ``4(L-1)+1``
when it is odd (it decodes in batches of two latent frames, the first batch taking the odd one), so only ``8k+1``
frames come back as asked (5 → 8, 13 → 16); sides divisible by 8 pass the pipeline's check and crash in the
transformer's 2×2 patches unless divisible by 16.

The transformer's positional table has ``max_text_seq_length`` text slots (226 in every released model) and the
call's ``max_sequence_length`` must equal it, or the video tokens get the positions of text tokens: the call takes
it from the loaded transformer's config, and the tiny model is built with 226 like the real ones.

CogVideoX-5b-I2V's transformer has *learned* positional embeddings for one size (720×480): any other size fails at
the first step. Such a model is refused before the first step, naming the side and the size it needs. (At another
frame count than its 49 the transformer silently swaps its learned embeddings for sinusoidal ones; it runs, with
whatever that costs in quality, so that is left to the user.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from components.generation.families.base import (
    Family,
    ModelFolder,
    ShapeRules,
    StepEnd,
    Task,
    class_mismatch,
    refuse_image_channels,
    restored,
)
from components.generation.families.tokenizers import TEXT_DIM, char_t5_tokenizer, tiny_t5_encoder
from components.generation.families.vae_inputs import encoder_in_own_dtype
from recovery.errors import InvalidParameterError

__all__ = [
    "CogVideoX",
    "CogVideoXImageToVideo",
    "build_tiny_cogvideox",
    "cogvideox_decoder_chunks",
    "cogvideox_stream_tile",
]

TINY_COGVIDEOX_ID = "kintsugi/tiny-cogvideox-random"
TINY_COGVIDEOX_I2V_ID = "kintsugi/tiny-cogvideox-i2v-random"
#: The text length of every released CogVideoX transformer (``max_text_seq_length``) and the pipeline's default.
MAX_TEXT_SEQ_LENGTH = 226
SEED = 20261201


def cogvideox_decoder_chunks(vae: Any, latent_shape: tuple[int, ...]) -> int:
    """How many times ``AutoencoderKLCogVideoX.decode`` calls its decoder for latents of ``latent_shape``
    (``[B, F, C, H, W]``, as the pipeline returns them): once per batch of ``num_latent_frames_batch_size`` latent
    frames, for every tile when tiling applies (the condition and the strides of its ``_decode``/``tiled_decode``)."""
    _batch, frames, _channels, height, width = latent_shape
    batches = max(int(frames) // vae.num_latent_frames_batch_size, 1)
    tiled = width > vae.tile_latent_min_width or height > vae.tile_latent_min_height
    if not (getattr(vae, "use_tiling", False) and tiled):
        return batches
    rows = len(range(0, height, int(vae.tile_latent_min_height * (1 - vae.tile_overlap_factor_height))))
    columns = len(range(0, width, int(vae.tile_latent_min_width * (1 - vae.tile_overlap_factor_width))))
    return batches * rows * columns


#: The tile overlap of a tiled streamed decode on both axes: with tiles of 6k latent pixels it makes the stride
#: (in latent pixels × 8) equal the part of each tile kept (in pixels), so the tiles add up to the frame exactly —
#: other tile sizes make ``tiled_decode`` return a frame of the wrong size (measured: 262 rows for 256).
STREAM_TILE_OVERLAP = 1 / 6


def cogvideox_stream_tile(latent_side: int, scale: int = 8) -> int:
    """The tile side in latent pixels for a tiled streamed decode along a side of ``latent_side`` latent pixels:
    about half of it, a multiple of 6, whose stride and kept part agree (see ``STREAM_TILE_OVERLAP``)."""
    tile = 6 * max(1, latent_side // 12)
    while tile > 6 and int(tile * (1 - STREAM_TILE_OVERLAP)) * scale != tile * scale - int(
        tile * scale * STREAM_TILE_OVERLAP
    ):
        tile -= 6
    return tile


class CogVideoX(Family):
    name: ClassVar[str] = "cogvideox"
    label: ClassVar[str] = "CogVideoX text-to-video"
    pipeline_class: ClassVar[str] = "CogVideoXPipeline"
    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_TO_VIDEO,)
    rules: ClassVar[ShapeRules] = ShapeRules(side_multiple=16, frame_multiple=8, label="CogVideoX")
    tiny_model_id: ClassVar[str] = TINY_COGVIDEOX_ID
    known_models: ClassVar[tuple[str, ...]] = (
        TINY_COGVIDEOX_ID,
        "THUDM/CogVideoX-2b",
        "THUDM/CogVideoX-5b",
        "THUDM/CogVideoX1.5-5B",  # latent frames padded to pairs: same 8k+1 frames, padding dropped at decode
    )
    # Its decoder's working set for one batch of latent frames at full size is the decode's peak, streamed or not
    # (17×256²: 257 MiB plain, 256 streamed, 173 streamed with frame-sized tiles).
    tiled_decode_retry: ClassVar[bool] = True

    def check_folder(self, folder: ModelFolder) -> None:
        """A transformer that takes the image's latents as extra channels is image-to-video; one that does not is
        text-to-video: under the other class either fails at the first step with a channel mismatch."""
        transformer = folder.config("transformer")
        in_channels, out_channels = transformer.get("in_channels"), transformer.get("out_channels")
        if not (in_channels and out_channels):
            return
        if self.needs_image and in_channels == out_channels:
            raise class_mismatch(
                folder,
                self,
                f"its transformer takes {in_channels} input channels, no image latents (a text-to-video model): "
                "it cannot run image-to-video",
            )
        if not self.needs_image:
            refuse_image_channels(self, folder)

    def call_arguments(self, request: Any, image: Any | None) -> dict[str, Any]:
        return {**super().call_arguments(request, image), "max_sequence_length": MAX_TEXT_SEQ_LENGTH}

    def denoise(self, pipe: Any, request: Any, image: Any | None, generator: Any, step_end: StepEnd) -> Any:
        _check_learned_size(pipe, request)
        arguments = self.call_arguments(request, image)
        arguments["max_sequence_length"] = int(pipe.transformer.config.max_text_seq_length)
        with encoder_in_own_dtype(pipe.vae):  # image-to-video encodes the image in the prompt's dtype
            return pipe(**arguments, generator=generator, output_type="latent", callback_on_step_end=step_end).frames

    def decode(self, pipe: Any, latents: Any, request: Any) -> Any:
        """``CogVideoXPipeline.__call__``'s decode: drop CogVideoX 1.5's padding frames, then ``decode_latents``."""
        import torch

        with torch.no_grad():
            latents = latents[:, _padding_frames(pipe, request.num_frames) :]
            # A VAE kept in another dtype than the transformer (generation.precision) needs its own dtype; the
            # pipeline's decode assumes one dtype for all, where this cast changes nothing.
            return pipe.decode_latents(latents.to(pipe.vae.dtype))

    def decode_stream(self, pipe: Any, latents: Any, request: Any) -> Iterator[Any]:
        """``decode`` one batch of latent frames at a time: ``AutoencoderKLCogVideoX._decode``'s loop with its
        convolution cache, without the ``torch.cat`` of every batch's frames (each chunk is the whole decode's
        frames, value for value). A tiled or batch-sliced decode comes as one chunk."""
        import torch

        vae = pipe.vae
        with torch.no_grad():
            kept = latents[:, _padding_frames(pipe, request.num_frames) :].to(vae.dtype)
            z = 1 / pipe.vae_scaling_factor_image * kept.permute(0, 2, 1, 3, 4)  # as ``decode_latents``
            _batch, _channels, frames, height, width = z.shape
            tiled = vae.use_tiling and (width > vae.tile_latent_min_width or height > vae.tile_latent_min_height)
            if tiled or (vae.use_slicing and z.shape[0] > 1):
                yield vae.decode(z).sample
                return
            hook = getattr(vae, "_hf_hook", None)  # model offload moves the VAE in on ``decode``, as this does
            if hook is not None and hasattr(hook, "pre_forward"):
                hook.pre_forward(vae)
            size = vae.num_latent_frames_batch_size
            remaining = frames % size
            conv_cache = None
            for index in range(max(frames // size, 1)):
                start = size * index + (0 if index == 0 else remaining)
                chunk = z[:, :, start : size * (index + 1) + remaining]
                if vae.post_quant_conv is not None:
                    chunk = vae.post_quant_conv(chunk)
                out, conv_cache = vae.decoder(chunk, conv_cache=conv_cache)
                yield out
                del out

    @contextmanager
    def stream_tiles(self, pipe: Any, request: Any) -> Iterator[tuple[int, int] | None]:
        """With tiling on and a frame within the VAE's tile (its sample size, 480×720 in the released models):
        tiles of about half the frame (``cogvideox_stream_tile``, overlap ``STREAM_TILE_OVERLAP``); otherwise the
        VAE's tiles as they are."""
        vae = pipe.vae
        if not getattr(vae, "use_tiling", False):
            yield None
            return
        with restored(
            vae,
            "tile_sample_min_height",
            "tile_sample_min_width",
            "tile_latent_min_height",
            "tile_latent_min_width",
            "tile_overlap_factor_height",
            "tile_overlap_factor_width",
        ):
            if request.width <= vae.tile_sample_min_width and request.height <= vae.tile_sample_min_height:
                scale = 2 ** (len(vae.config.block_out_channels) - 1)
                height = cogvideox_stream_tile(request.height // scale, scale)
                width = cogvideox_stream_tile(request.width // scale, scale)
                vae.tile_latent_min_height, vae.tile_latent_min_width = height, width
                vae.tile_sample_min_height, vae.tile_sample_min_width = height * scale, width * scale
                vae.tile_overlap_factor_height = vae.tile_overlap_factor_width = STREAM_TILE_OVERLAP
            yield int(vae.tile_sample_min_height), int(vae.tile_sample_min_width)

    def decoder_chunks(self, pipe: Any, latent_shape: tuple[int, ...], request: Any) -> int:
        batch, frames, *rest = latent_shape
        kept = (batch, frames - _padding_frames(pipe, request.num_frames), *rest)
        return cogvideox_decoder_chunks(pipe.vae, kept)

    def build_tiny(self) -> Any:
        return build_tiny_cogvideox()


class CogVideoXImageToVideo(CogVideoX):
    """CogVideoX's image-to-video weights: the same shape rules, latent layout and decode."""

    name: ClassVar[str] = "cogvideox-i2v"
    label: ClassVar[str] = "CogVideoX image-to-video"
    pipeline_class: ClassVar[str] = "CogVideoXImageToVideoPipeline"
    tasks: ClassVar[tuple[Task, ...]] = (Task.IMAGE_TO_VIDEO,)
    tiny_model_id: ClassVar[str] = TINY_COGVIDEOX_I2V_ID
    known_models: ClassVar[tuple[str, ...]] = (TINY_COGVIDEOX_I2V_ID, "THUDM/CogVideoX-5b-I2V")

    def build_tiny(self) -> Any:
        return build_tiny_cogvideox(image_to_video=True)


def _check_learned_size(pipe: Any, request: Any) -> None:
    """Refuse, before the first step, a size other than the one learned positional embeddings were trained at."""
    config = pipe.transformer.config
    if not config.use_learned_positional_embeddings:
        return
    ratio = pipe.vae_scale_factor_spatial
    for name, value, needed in (
        ("width", request.width, config.sample_width * ratio),
        ("height", request.height, config.sample_height * ratio),
    ):
        if value != needed:
            raise InvalidParameterError(
                f"`{name}` must be {needed} for this model: its positional embeddings are learned at "
                f"{config.sample_width * ratio}×{config.sample_height * ratio} (got {value})",
                parameter=name,
                value=value,
                constraint=f"= {needed}",
            )


def _padding_frames(pipe: Any, num_frames: int) -> int:
    """The latent frames CogVideoX 1.5's pipeline adds in front (to a multiple of ``patch_size_t``); 0 for 1.0."""
    patch_size_t = pipe.transformer.config.patch_size_t
    latent_frames = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    if patch_size_t is None or latent_frames % patch_size_t == 0:
        return 0
    return int(patch_size_t - latent_frames % patch_size_t)


def build_tiny_cogvideox(
    *, image_to_video: bool = False, learned_positions: bool = False, version_1_5: bool = False
) -> Any:
    """A random-weight CogVideoX with the real models' compression (8× spatial, 4× temporal, 2×2 patches) and
    text length (226), so the tiny model follows the real shape rules; seeded and in eval mode.
    ``image_to_video``: a ``CogVideoXImageToVideoPipeline`` (the transformer takes the image latents too);
    ``learned_positions``: rotary and learned positional embeddings, the latter at 64×64, as CogVideoX-5b-I2V's
    are at 720×480 (tests); ``version_1_5``: CogVideoX 1.5's transformer (rotary positions, latent frames in
    pairs, ``patch_size_t=2``, so the pipeline pads them; tests)."""
    import torch
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    tokenizer = char_t5_tokenizer()
    rotary = learned_positions or version_1_5
    torch.manual_seed(SEED)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16 if rotary else 8,  # rotary splits a head in 4 + 6 + 6 (t, h, w)
        in_channels=8 if image_to_video else 4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=TEXT_DIM,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        patch_size_t=2 if version_1_5 else None,
        patch_bias=not version_1_5,
        temporal_compression_ratio=4,
        max_text_seq_length=MAX_TEXT_SEQ_LENGTH,
        use_rotary_positional_embeddings=rotary,  # diffusers has learned ones only beside rotary ones
        use_learned_positional_embeddings=learned_positions,
    )
    torch.manual_seed(SEED + 1)
    # Default sample size (480×720): tiles stay the real models' (small custom tiles decode to the wrong size).
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    torch.manual_seed(SEED + 2)
    text_encoder = tiny_t5_encoder(len(tokenizer))
    # CogVideoX-2b's scheduler configuration.
    scheduler = CogVideoXDDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    modules: tuple[Any, ...] = (transformer, vae, text_encoder)
    for module in modules:  # modules built in memory start in training mode
        module.eval()
    pipeline = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
    return pipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
