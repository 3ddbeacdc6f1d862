"""HunyuanVideo text-to-video (``HunyuanVideoPipeline``).

Latents are ``[B, C, F, H, W]``; the pipeline decodes ``latents / vae.config.scaling_factor`` with ``vae.decode``
(no mean/std), kept verbatim here. Its VAE decodes the whole clip in one decoder call unless the clip is longer
than one frame tile (16 frames: then once per temporal tile) or tiling is on and the frame is larger than a tile.

Two traps of the pipeline, both handled here:

- **Frames are floored silently** to ``4k+1`` (10 frames come back as 9, without a word), so the family's shape
  rules (``4k+1``, sides ÷16 — the pipeline checks ÷16 itself) correct a request first, with a report.
- **The prompt template assumes the real tokenizer.** The default template wraps the prompt in a system prompt
  and crops its first 95 tokens, counted in the real (Llama 3) tokenizer's tokens. The built-in tiny model has a
  character-level tokenizer: there the template would fill the whole sequence and crop the prompt away. The rule,
  decided by the folder: a Llama tokenizer of fewer than ``CHARACTER_LEVEL_VOCABULARY`` tokens is character-level
  (real ones have tens of thousands) and gets the bare prompt (``TINY_PROMPT_TEMPLATE``); any other keeps the
  pipeline's default template. ``denoise`` reads the loaded tokenizer; ``call_arguments`` alone (no pipeline at
  hand) can only go by the model id, so it gives the tiny template to the built-in tiny model's id and no other.

HunyuanVideo is guidance-distilled: ``guidance_scale`` is the guidance embedded in the transformer, and a negative
prompt takes effect only with true classifier-free guidance (``true_cfg_scale`` > 1, twice the cost per step),
which stays at the pipeline's default (off); ``prompt_2`` (the CLIP prompt) defaults to the prompt.
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

__all__ = [
    "CHARACTER_LEVEL_VOCABULARY",
    "TINY_HUNYUAN_ID",
    "TINY_PROMPT_TEMPLATE",
    "HunyuanVideoTextToVideo",
    "build_tiny_hunyuan",
    "hunyuan_decoder_chunks",
    "hunyuan_stream_tile",
    "prompt_template_for",
]

TINY_HUNYUAN_ID = "kintsugi/tiny-hunyuan-random"
#: The bare prompt, nothing cropped: what a character-level tokenizer needs instead of the default template.
TINY_PROMPT_TEMPLATE: dict[str, Any] = {"template": "{}", "crop_start": 0}
#: A Llama tokenizer with fewer tokens than this is character-level (real ones have tens of thousands).
CHARACTER_LEVEL_VOCABULARY = 1000

# The tiny pipeline's dimensions (random weights; 0.6 MB on disk; 9×64² in 2 steps takes well under a second).
# Patches of 2 and a VAE of 8× spatial, 4× temporal compression, like the real model, so the real shape rules hold.
TRANSFORMER_CONFIG: dict[str, Any] = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=10,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    patch_size=2,
    patch_size_t=1,
    guidance_embeds=True,
    text_embed_dim=16,  # the Llama encoder's hidden size
    pooled_projection_dim=8,  # the CLIP encoder's hidden size (its pooled output)
    rope_axes_dim=(2, 4, 4),  # sums to attention_head_dim
)
VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=("HunyuanVideoDownBlock3D",) * 4,
    up_block_types=("HunyuanVideoUpBlock3D",) * 4,
    block_out_channels=(8, 8, 8, 8),
    layers_per_block=1,
    act_fn="silu",
    norm_num_groups=4,
    scaling_factor=0.476986,
    spatial_compression_ratio=8,
    temporal_compression_ratio=4,
    mid_block_add_attention=True,
)


def prompt_template_for(tokenizer: Any) -> dict[str, Any] | None:
    """The ``prompt_template`` for a pipeline whose Llama tokenizer is ``tokenizer``: the bare prompt for a
    character-level one, ``None`` (the pipeline's own default) for any other."""
    if len(tokenizer) < CHARACTER_LEVEL_VOCABULARY:
        return dict(TINY_PROMPT_TEMPLATE)
    return None


def hunyuan_stream_tile(width: int, height: int) -> int:
    """The tile side (pixels) a tiled streamed decode uses for a frame within one VAE tile: half the larger side,
    rounded up to a multiple of 32 (tile and its ¾ stride whole latent pixels), at least 32."""
    return max(32, -(-max(width, height) // 2 // 32) * 32)


def hunyuan_decoder_chunks(vae: Any, latent_shape: tuple[int, ...]) -> int:
    """How many times ``AutoencoderKLHunyuanVideo.decode`` calls its decoder: the conditions and strides of its
    ``_decode``, ``_temporal_tiled_decode`` and ``tiled_decode``, per batch item when slicing."""
    batch, _channels, frames, height, width = latent_shape
    spatial, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    min_height, min_width = vae.tile_sample_min_height // spatial, vae.tile_sample_min_width // spatial

    def tiles(tile_height: int, tile_width: int) -> int:
        if not (getattr(vae, "use_tiling", False) and (tile_width > min_width or tile_height > min_height)):
            return 1
        rows = len(range(0, tile_height, vae.tile_sample_stride_height // spatial))
        columns = len(range(0, tile_width, vae.tile_sample_stride_width // spatial))
        return rows * columns

    if getattr(vae, "use_framewise_decoding", False) and frames > vae.tile_sample_min_num_frames // temporal:
        per_item = len(range(0, frames, vae.tile_sample_stride_num_frames // temporal)) * tiles(height, width)
    else:
        per_item = tiles(height, width)
    return int(per_item * (batch if getattr(vae, "use_slicing", False) and batch > 1 else 1))


class HunyuanVideoTextToVideo(Family):
    name: ClassVar[str] = "hunyuanvideo-t2v"
    label: ClassVar[str] = "HunyuanVideo text-to-video"
    pipeline_class: ClassVar[str] = "HunyuanVideoPipeline"
    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_TO_VIDEO,)
    rules: ClassVar[ShapeRules] = ShapeRules(side_multiple=16, frame_multiple=4, label="HunyuanVideo")
    tiny_model_id: ClassVar[str] = TINY_HUNYUAN_ID
    known_models: ClassVar[tuple[str, ...]] = (TINY_HUNYUAN_ID, "hunyuanvideo-community/HunyuanVideo")
    # One decoder call decodes a whole temporal tile (16 frames) at full size: that working set is the decode's
    # peak, streamed or not (17×256²: 195 MiB plain, 196 streamed, 141 streamed with frame-sized tiles).
    tiled_decode_retry: ClassVar[bool] = True

    def check_folder(self, folder: ModelFolder) -> None:
        """An image-conditioned HunyuanVideo transformer (I2V, SkyReels: extra input channels or an image
        condition type) under the text-to-video class would load and fail at step 1."""
        refuse_image_channels(self, folder)
        transformer = folder.config("transformer")
        if transformer.get("image_condition_type"):
            raise class_mismatch(
                folder,
                self,
                f"its transformer is conditioned on an image ({transformer['image_condition_type']}): "
                "it cannot run text-to-video",
            )

    def call_arguments(self, request: Any, image: Any | None) -> dict[str, Any]:
        """The base arguments; the tiny prompt template for the built-in tiny model's id (see the module
        docstring: with a pipeline at hand, ``denoise`` decides by its tokenizer instead)."""
        arguments = super().call_arguments(request, image)
        if request.model_id == self.tiny_model_id:
            arguments["prompt_template"] = dict(TINY_PROMPT_TEMPLATE)
        return arguments

    def denoise(self, pipe: Any, request: Any, image: Any | None, generator: Any, step_end: StepEnd) -> Any:
        """The latents ``[B, C, F, H, W]``, the prompt template chosen by the loaded folder's tokenizer."""
        arguments = self.call_arguments(request, image)
        arguments.pop("prompt_template", None)
        template = prompt_template_for(pipe.tokenizer)
        if template is not None:
            arguments["prompt_template"] = template
        return pipe(**arguments, generator=generator, output_type="latent", callback_on_step_end=step_end).frames

    def decode(self, pipe: Any, latents: Any, request: Any) -> Any:
        """``HunyuanVideoPipeline.__call__``'s decode, step for step."""
        import torch

        with torch.no_grad():
            z = latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
            return pipe.vae.decode(z, return_dict=False)[0]

    def decoder_chunks(self, pipe: Any, latent_shape: tuple[int, ...], request: Any) -> int:
        return hunyuan_decoder_chunks(pipe.vae, latent_shape)

    @contextmanager
    def stream_tiles(self, pipe: Any, request: Any) -> Iterator[tuple[int, int] | None]:
        """With tiling on and a frame no larger than the VAE's tile (256² in every released model): tiles of
        half the frame's larger side (a multiple of 32, so tile and stride stay whole latent pixels), the VAE's
        own overlap of a quarter tile; otherwise the VAE's tiles as they are."""
        vae = pipe.vae
        if not getattr(vae, "use_tiling", False):
            yield None
            return
        sides = ("height", "width")
        with restored(vae, *(f"tile_sample_{kind}_{side}" for kind in ("min", "stride") for side in sides)):
            if request.width <= vae.tile_sample_min_width and request.height <= vae.tile_sample_min_height:
                tile = hunyuan_stream_tile(request.width, request.height)
                vae.tile_sample_min_height = vae.tile_sample_min_width = tile
                vae.tile_sample_stride_height = vae.tile_sample_stride_width = tile * 3 // 4
            yield int(vae.tile_sample_min_height), int(vae.tile_sample_min_width)

    def build_tiny(self) -> Any:
        return build_tiny_hunyuan()


def build_tiny_hunyuan() -> Any:  # -> diffusers.HunyuanVideoPipeline (imported lazily: diffusers costs seconds)
    """The tiny HunyuanVideo: every module seeded and ``.eval()``-ed, character-level Llama and CLIP tokenizers."""
    import torch
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    from components.generation.families.tokenizers import char_clip_tokenizer, char_llama_tokenizer
    from components.generation.families.wan import SEED

    tokenizer, tokenizer_2 = char_llama_tokenizer(), char_clip_tokenizer()
    torch.manual_seed(SEED)
    transformer = HunyuanVideoTransformer3DModel(**TRANSFORMER_CONFIG)
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLHunyuanVideo(**VAE_CONFIG)
    torch.manual_seed(SEED + 2)
    text_encoder = LlamaModel(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=TRANSFORMER_CONFIG["text_embed_dim"],
            intermediate_size=32,
            num_hidden_layers=2,  # the pipeline takes the hidden states two layers below the last
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(SEED + 3)
    text_encoder_2 = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer_2),
            hidden_size=TRANSFORMER_CONFIG["pooled_projection_dim"],
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=TRANSFORMER_CONFIG["pooled_projection_dim"],
            bos_token_id=tokenizer_2.bos_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
            pad_token_id=tokenizer_2.pad_token_id,
        )
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    modules: tuple[Any, ...] = (transformer, vae, text_encoder, text_encoder_2)
    for module in modules:
        module.eval()  # built in memory, a module starts in training mode (``from_pretrained`` evals)
    return HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
