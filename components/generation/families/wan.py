"""Wan 2.1 text-to-video (``WanPipeline``): the family of the built-in tiny model.

Latents are ``[B, C, F, H, W]``; the pipeline decodes ``z * std + mean`` (its code writes ``z / (1/std) + mean``,
kept verbatim so the arithmetic, and the frames, are bit-identical). The VAE's decoder runs once per latent frame
(per tile when tiled), carrying a causal cache from chunk to chunk.
"""

from __future__ import annotations

from typing import Any, ClassVar

from components.generation.families.base import Family, ModelFolder, ShapeRules, Task, class_mismatch
from components.generation.families.tokenizers import char_t5_tokenizer

__all__ = ["Wan21TextToVideo", "build_tiny_wan", "wan_decode", "wan_decoder_chunks"]

TINY_WAN_ID = "kintsugi/tiny-wan-random"
SEED = 20261128
TEXT_DIM = 32

# Dimensions of the tiny pipeline. The transformer is sized a little above diffusers' test values so that
# denoising has a real cost next to the VAE decode (see DESIGN.md, "where the time goes").
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=16,
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=32,
    ffn_dim=128,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=1024,
)
VAE_CONFIG = dict(
    base_dim=3,
    z_dim=16,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
)


def wan_decode(pipe: Any, latents: Any) -> Any:
    """``WanPipeline.__call__``'s decode, step for step."""
    import torch

    vae = pipe.vae
    with torch.no_grad():
        z = latents.to(vae.device, dtype=vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        return vae.decode(z / inv_std + mean, return_dict=False)[0]


def wan_decoder_chunks(vae: Any, latent_shape: tuple[int, ...]) -> int:
    """How many times ``AutoencoderKLWan.decode`` calls its decoder: once per latent frame, for every tile when
    tiling applies (the condition and the strides of its ``_decode``/``tiled_decode``)."""
    _batch, _channels, frames, height, width = latent_shape
    ratio = vae.spatial_compression_ratio
    if not (
        getattr(vae, "use_tiling", False)
        and (width > vae.tile_sample_min_width // ratio or height > vae.tile_sample_min_height // ratio)
    ):
        return int(frames)
    rows = len(range(0, height, vae.tile_sample_stride_height // ratio))
    columns = len(range(0, width, vae.tile_sample_stride_width // ratio))
    return int(frames) * rows * columns


class Wan21TextToVideo(Family):
    name: ClassVar[str] = "wan2.1-t2v"
    label: ClassVar[str] = "Wan 2.1 text-to-video"
    pipeline_class: ClassVar[str] = "WanPipeline"
    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_TO_VIDEO,)
    rules: ClassVar[ShapeRules] = ShapeRules(side_multiple=16, frame_multiple=4, label="Wan")
    tiny_model_id: ClassVar[str] = TINY_WAN_ID
    known_models: ClassVar[tuple[str, ...]] = (
        TINY_WAN_ID,
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "Wan-AI/Wan2.1-T2V-14B-Diffusers",
    )

    def matches(self, folder: ModelFolder) -> bool:
        """A ``WanPipeline`` without Wan 2.2's second transformer or expanded timesteps."""
        return (
            folder.class_name == self.pipeline_class
            and not folder.index.get("expand_timesteps")
            and not folder.has("transformer_2")
        )

    def check_folder(self, folder: ModelFolder) -> None:
        """An image-to-video Wan folder loads as ``WanPipeline`` without complaint and fails at step 1 with a
        channel mismatch (36 vs 16): its transformer takes the image latents as extra input channels."""
        transformer = folder.config("transformer")
        in_channels, out_channels = transformer.get("in_channels"), transformer.get("out_channels")
        if in_channels and out_channels and in_channels != out_channels:
            raise class_mismatch(
                folder,
                self,
                f"its transformer takes {in_channels} input channels for {out_channels} latent ones "
                "(an image-to-video model): it cannot run text-to-video",
            )

    def decode(self, pipe: Any, latents: Any, request: Any) -> Any:
        return wan_decode(pipe, latents)

    def decoder_chunks(self, pipe: Any, latent_shape: tuple[int, ...], request: Any) -> int:
        return wan_decoder_chunks(pipe.vae, latent_shape)

    def build_tiny(self) -> Any:
        return build_tiny_wan()


def build_tiny_wan():  # -> diffusers.WanPipeline (imported lazily: diffusers costs seconds)
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = char_t5_tokenizer()
    torch.manual_seed(SEED)
    transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    torch.manual_seed(SEED + 2)
    text_config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    text_encoder = UMT5EncoderModel(text_config)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    )
