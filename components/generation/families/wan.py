"""The Wan families: 2.1 text-to-video (the built-in tiny model's), 2.1 image-to-video, 2.2 TI2V-5B style and 2.2
A14B style. Two diffusers classes carry four architectures, told apart by ``model_index.json``:

==========================  =================================  ===================================================
family                      ``_class_name``                    what tells it apart
==========================  =================================  ===================================================
``Wan21TextToVideo``        ``WanPipeline``                    no ``expand_timesteps``, no ``transformer_2``
``Wan21ImageToVideo``       ``WanImageToVideoPipeline``        no ``expand_timesteps``, no ``transformer_2``
``Wan22TextImageToVideo``   ``WanPipeline`` (or the I2V one)   ``expand_timesteps: true`` (VAE 2.2, z_dim 48)
``Wan22A14B``               ``WanPipeline``                    a ``transformer_2`` and a ``boundary_ratio``
==========================  =================================  ===================================================

Latents are ``[B, C, F, H, W]`` in every Wan; the pipelines decode ``z * std + mean`` (their code writes
``z / (1/std) + mean``, kept verbatim so the arithmetic, and the frames, are bit-identical). Wan 2.2's VAE
unpatchifies and clamps inside ``vae.decode`` (``patch_size`` 2; diffusers 0.42.1 has no ``clip_output`` option),
so one decode serves all four. The VAE's decoder runs once per latent frame (per tile when tiled), carrying a causal
cache from chunk to chunk.

Image-to-video on Wan 2.2 TI2V: in diffusers 0.42.1 ``WanPipeline.__call__`` takes no image even with
``expand_timesteps``; only ``WanImageToVideoPipeline`` (its ``expand_timesteps`` branch: the image's latents replace
the first latent frame, whose timestep is masked to 0) does. The hub's TI2V-5B folder names ``WanPipeline``, so the
family loads the folder's own class and, for the other task, runs the other class over the *same* modules (no copy,
no second load).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar, cast

from components.generation.families.base import (
    Family,
    ModelFolder,
    ShapeRules,
    StepEnd,
    Task,
    class_mismatch,
    refuse_image_channels,
)
from components.generation.families.tokenizers import TEXT_DIM, char_t5_tokenizer, tiny_t5_encoder

__all__ = [
    "TINY_WAN22_A14B_ID",
    "TINY_WAN22_TI2V_ID",
    "TINY_WAN_I2V_ID",
    "Wan21ImageToVideo",
    "Wan21TextToVideo",
    "Wan22A14B",
    "Wan22TextImageToVideo",
    "build_tiny_wan",
    "tiny_umt5_encoder",
    "wan_decode",
    "wan_decode_stream",
    "wan_decoder_chunks",
]

TINY_WAN_ID = "kintsugi/tiny-wan-random"
TINY_WAN_I2V_ID = "kintsugi/tiny-wan-i2v-random"
TINY_WAN22_TI2V_ID = "kintsugi/tiny-wan22-ti2v-random"
TINY_WAN22_A14B_ID = "kintsugi/tiny-wan22-a14b-random"

SEED = 20261128  # every tiny Wan's modules are seeded from it (the manifest records it)

# Dimensions of the default tiny pipeline. The transformer is sized a little above diffusers' test values so that
# denoising has a real cost next to the VAE decode (see DESIGN.md, "where the time goes").
TRANSFORMER_CONFIG: dict[str, Any] = dict(
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
VAE_CONFIG: dict[str, Any] = dict(
    base_dim=3,
    z_dim=16,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
)

T2V_CLASS = "WanPipeline"
I2V_CLASS = "WanImageToVideoPipeline"

# The tiny variants: the default's dimensions with 1 transformer layer (they need not carry the default's
# benchmark-sized denoise cost), so each stays near 1 MB on disk.
CLIP_DIM = 16  # the tiny CLIP vision encoder's width = the I2V transformer's image_dim
#: Wan 2.2's VAE as TI2V-5B has it (z_dim 48, residual blocks, 2×2 patches, 16× spatial), with tiny widths. Its
#: latent statistics are made up but not trivial, so the decode's denormalisation is really exercised.
WAN22_VAE_CONFIG: dict[str, Any] = dict(
    base_dim=4,
    decoder_base_dim=6,  # wider than the encoder, as 2.2's is (160 → 256)
    z_dim=48,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=[round(0.1 * (i % 7 - 3), 2) for i in range(48)],
    latents_std=[round(1.0 + 0.1 * (i % 5), 2) for i in range(48)],
)
A14B_BOUNDARY_RATIO = 0.875  # Wan2.2-T2V-A14B's: the high-noise expert runs while t >= 875 of 1000


def _denormalised(vae: Any, latents: Any) -> Any:
    """The pipelines' ``latents / (1 / std) + mean``, verbatim (bit-identical frames)."""
    import torch

    z = latents.to(vae.device, dtype=vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    return z / inv_std + mean


def wan_decode(pipe: Any, latents: Any) -> Any:
    """``WanPipeline.__call__``'s decode (and ``WanImageToVideoPipeline``'s, the same lines), step for step."""
    import torch

    vae = pipe.vae
    with torch.no_grad():
        return vae.decode(_denormalised(vae, latents), return_dict=False)[0]


def wan_decode_stream(pipe: Any, latents: Any) -> Iterator[Any]:
    """``wan_decode`` one decoder chunk at a time: ``AutoencoderKLWan._decode``'s loop over the latent frames with
    its causal feature cache, without the ``torch.cat`` that holds every decoded frame (twice, while it copies).
    Unpatchify (Wan 2.2) and the clamp act frame by frame, so each chunk is the whole decode's frames, value for
    value. A tiled or batch-sliced decode is not chunked here: it comes as one chunk."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    vae = pipe.vae
    with torch.no_grad():
        z = _denormalised(vae, latents)
        _batch, _channels, frames, height, width = z.shape
        ratio = vae.spatial_compression_ratio
        tiled = vae.use_tiling and (
            width > vae.tile_sample_min_width // ratio or height > vae.tile_sample_min_height // ratio
        )
        if tiled or (vae.use_slicing and z.shape[0] > 1):
            yield vae.decode(z, return_dict=False)[0]
            return
        hook = getattr(vae, "_hf_hook", None)  # model offload moves the VAE in on ``decode``, as this does
        if hook is not None and hasattr(hook, "pre_forward"):
            hook.pre_forward(vae)
        vae.clear_cache()
        try:
            x = vae.post_quant_conv(z)
            del z
            for index in range(frames):
                vae._conv_idx = [0]
                out = vae.decoder(
                    x[:, :, index : index + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=index == 0
                )
                if vae.config.patch_size is not None:
                    out = unpatchify(out, patch_size=vae.config.patch_size)
                yield torch.clamp(out, min=-1.0, max=1.0)
                del out
        finally:
            vae.clear_cache()


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


def _channels(folder: ModelFolder, component: str) -> tuple[int | None, int | None]:
    config = folder.config(component)
    return config.get("in_channels"), config.get("out_channels")


def _as_class(pipe: Any, class_name: str) -> Any:
    """``pipe`` as the diffusers class ``class_name``, over the same modules (Wan 2.2 TI2V: ``WanPipeline`` for
    text, ``WanImageToVideoPipeline`` for an image). The modules are shared, so the memory plan, tiling and a
    compiled transformer apply to both. Model offload's hooks stay the loaded pipeline's: they move each module
    as it runs, but the other class does not re-arm them at its end (unmeasured on a GPU here)."""
    import diffusers

    cls = getattr(diffusers, class_name)
    if type(pipe) is cls:
        return pipe
    other = cls(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        transformer=pipe.transformer,
        transformer_2=pipe.transformer_2,
        boundary_ratio=pipe.config.boundary_ratio,
        expand_timesteps=pipe.config.expand_timesteps,
    )
    other.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return other


def _evaluated(pipe: Any) -> Any:
    """Modules built in memory start in training mode (``from_pretrained`` evaluates them): a tiny pipeline is
    used as it will be loaded."""
    import torch

    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def _tiny_transformer(seed: int, **changes: Any) -> Any:
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": 1, **changes})


def _tiny_parts(flow_shift: float = 3.0) -> dict[str, Any]:
    """The tokenizer, text encoder, 2.1 VAE and scheduler every tiny Wan shares (seeded like the default's)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler

    tokenizer = char_t5_tokenizer()
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    torch.manual_seed(SEED + 2)
    text_encoder = tiny_umt5_encoder(len(tokenizer))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler)


class _Wan(Family):
    """What every Wan shares: the decode and its chunk count."""

    def decode(self, pipe: Any, latents: Any, request: Any) -> Any:
        return wan_decode(pipe, latents)

    def decode_stream(self, pipe: Any, latents: Any, request: Any) -> Iterator[Any]:
        return wan_decode_stream(pipe, latents)

    def decoder_chunks(self, pipe: Any, latent_shape: tuple[int, ...], request: Any) -> int:
        return wan_decoder_chunks(pipe.vae, latent_shape)


def _wan21(folder: ModelFolder, class_name: str) -> bool:
    """A Wan 2.1 folder of ``class_name``: one transformer, no expanded timesteps (those are Wan 2.2's)."""
    return (
        folder.class_name == class_name and not folder.index.get("expand_timesteps") and not folder.has("transformer_2")
    )


class Wan21TextToVideo(_Wan):
    name: ClassVar[str] = "wan2.1-t2v"
    label: ClassVar[str] = "Wan 2.1 text-to-video"
    pipeline_class: ClassVar[str] = T2V_CLASS
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
        return _wan21(folder, self.pipeline_class)

    def check_folder(self, folder: ModelFolder) -> None:
        """An image-to-video Wan folder loads as ``WanPipeline`` without complaint and fails at step 1 with a
        channel mismatch (36 vs 16): its transformer takes the image latents as extra input channels."""
        refuse_image_channels(self, folder)

    def build_tiny(self) -> Any:
        return build_tiny_wan()


class Wan21ImageToVideo(_Wan):
    """``WanImageToVideoPipeline``: the image conditions twice — its VAE latents (with a first-frame mask) enter
    the transformer as extra input channels, and its CLIP embedding joins the text in cross-attention."""

    name: ClassVar[str] = "wan2.1-i2v"
    label: ClassVar[str] = "Wan 2.1 image-to-video"
    pipeline_class: ClassVar[str] = I2V_CLASS
    tasks: ClassVar[tuple[Task, ...]] = (Task.IMAGE_TO_VIDEO,)
    rules: ClassVar[ShapeRules] = ShapeRules(side_multiple=16, frame_multiple=4, label="Wan")
    tiny_model_id: ClassVar[str] = TINY_WAN_I2V_ID
    known_models: ClassVar[tuple[str, ...]] = (
        TINY_WAN_I2V_ID,
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
    )

    def matches(self, folder: ModelFolder) -> bool:
        """A ``WanImageToVideoPipeline`` of Wan 2.1: one transformer, no expanded timesteps (those are 2.2's)."""
        return _wan21(folder, self.pipeline_class)

    def check_folder(self, folder: ModelFolder) -> None:
        """The converse of the text-to-video trap: a transformer without room for the image (latent channels +
        the 4-frame mask + the image's latent channels) fails at step 1; one that takes CLIP embeddings fails
        without an image encoder to make them."""
        in_channels, out_channels = _channels(folder, "transformer")
        vae = folder.config("vae")
        if in_channels and out_channels:
            mask = int(vae.get("scale_factor_temporal") or 4)
            expected = out_channels + int(vae.get("z_dim") or out_channels) + mask
            if in_channels != expected:
                raise class_mismatch(
                    folder,
                    self,
                    f"its transformer takes {in_channels} input channels, not the {expected} image conditioning "
                    f"needs ({out_channels} latent, {mask} mask, {expected - out_channels - mask} image channels): "
                    "it cannot run image-to-video",
                )
        if folder.config("transformer").get("image_dim") and not (
            folder.has("image_encoder") and folder.has("image_processor")
        ):
            raise class_mismatch(
                folder, self, "its transformer takes CLIP image embeddings and it has no image encoder or processor"
            )

    def build_tiny(self) -> Any:
        import torch
        from diffusers import WanImageToVideoPipeline
        from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

        parts = _tiny_parts()
        z_dim = parts["vae"].config.z_dim
        # The image's CLIP tokens get their own key/value projections from the model width, as the real I2V's do.
        width = cast(int, TRANSFORMER_CONFIG["num_attention_heads"]) * cast(
            int, TRANSFORMER_CONFIG["attention_head_dim"]
        )
        transformer = _tiny_transformer(SEED, in_channels=2 * z_dim + 4, image_dim=CLIP_DIM, added_kv_proj_dim=width)
        torch.manual_seed(SEED + 3)
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=CLIP_DIM,
                intermediate_size=2 * CLIP_DIM,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
            )
        )
        # transformers 5 without torchvision: the PIL processor (what it saves in model_index.json either way).
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return _evaluated(
            WanImageToVideoPipeline(
                **parts, transformer=transformer, image_encoder=image_encoder, image_processor=image_processor
            )
        )


class Wan22TextImageToVideo(_Wan):
    """Wan 2.2 TI2V-5B style: one transformer over the 48-channel latents of VAE 2.2 with per-token timesteps
    (``expand_timesteps``), text-to-video and image-to-video (the image becomes the first latent frame).

    Sides must divide by 32 (VAE 16× × patch 2): the pipelines check 16 and, at 80×80, silently return 64×64
    frames (measured; tested), so the rules say 32 and requests are corrected first, with a report."""

    name: ClassVar[str] = "wan2.2-ti2v"
    label: ClassVar[str] = "Wan 2.2 text/image-to-video (TI2V-5B)"
    pipeline_class: ClassVar[str] = T2V_CLASS
    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO)
    rules: ClassVar[ShapeRules] = ShapeRules(side_multiple=32, frame_multiple=4, label="Wan 2.2 TI2V")
    tiny_model_id: ClassVar[str] = TINY_WAN22_TI2V_ID
    known_models: ClassVar[tuple[str, ...]] = (TINY_WAN22_TI2V_ID, "Wan-AI/Wan2.2-TI2V-5B-Diffusers")

    def matches(self, folder: ModelFolder) -> bool:
        """Expanded timesteps and one transformer, under either class (the hub's folder names ``WanPipeline``;
        ``WanImageToVideoPipeline`` saves it without an image encoder)."""
        return (
            folder.class_name in (T2V_CLASS, I2V_CLASS)
            and bool(folder.index.get("expand_timesteps"))
            and not folder.has("transformer_2")
        )

    def check_folder(self, folder: ModelFolder) -> None:
        """The image enters as the first latent frame, not as extra channels: the transformer's input and output
        channels are the VAE's latent ones."""
        in_channels, out_channels = _channels(folder, "transformer")
        z_dim = folder.config("vae").get("z_dim")
        if in_channels and out_channels and (in_channels != out_channels or (z_dim and z_dim != in_channels)):
            raise class_mismatch(
                folder,
                self,
                f"its transformer takes {in_channels} input channels for {out_channels} latent ones and its VAE "
                f"makes {z_dim}: expanded timesteps need all three equal",
            )

    def load(self, path: str | os.PathLike[str], dtype: Any) -> Any:
        """The folder's own class (either), which ``denoise`` turns into the other one when the task needs it."""
        import diffusers

        cls = getattr(diffusers, ModelFolder.open(path).class_name)
        return cls.from_pretrained(os.fspath(path), dtype=dtype, use_safetensors=True)

    def denoise(self, pipe: Any, request: Any, image: Any | None, generator: Any, step_end: StepEnd) -> Any:
        runner = _as_class(pipe, I2V_CLASS if image is not None else T2V_CLASS)
        return super().denoise(runner, request, image, generator, step_end)

    def build_tiny(self) -> Any:
        import torch
        from diffusers import AutoencoderKLWan, WanPipeline

        parts = _tiny_parts(flow_shift=5.0)  # TI2V-5B's scheduler shift
        torch.manual_seed(SEED + 5)
        parts["vae"] = AutoencoderKLWan(**WAN22_VAE_CONFIG)
        z_dim = WAN22_VAE_CONFIG["z_dim"]
        transformer = _tiny_transformer(SEED, in_channels=z_dim, out_channels=z_dim)
        return _evaluated(WanPipeline(**parts, transformer=transformer, expand_timesteps=True))


class Wan22A14B(_Wan):
    """Wan 2.2 A14B style: two experts over the 2.1 VAE's latents, ``transformer`` while the timestep is at or
    above ``boundary_ratio × 1000`` (high noise), ``transformer_2`` below it. ``guidance_scale_2`` is left to the
    pipeline (it then equals ``guidance_scale``)."""

    name: ClassVar[str] = "wan2.2-a14b"
    label: ClassVar[str] = "Wan 2.2 A14B text-to-video"
    pipeline_class: ClassVar[str] = T2V_CLASS
    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_TO_VIDEO,)
    rules: ClassVar[ShapeRules] = ShapeRules(side_multiple=16, frame_multiple=4, label="Wan")
    tiny_model_id: ClassVar[str] = TINY_WAN22_A14B_ID
    known_models: ClassVar[tuple[str, ...]] = (TINY_WAN22_A14B_ID, "Wan-AI/Wan2.2-T2V-A14B-Diffusers")

    def matches(self, folder: ModelFolder) -> bool:
        """A ``WanPipeline`` with a second transformer (the low-noise expert)."""
        return (
            folder.class_name == self.pipeline_class
            and folder.has("transformer_2")
            and not folder.index.get("expand_timesteps")
        )

    def check_folder(self, folder: ModelFolder) -> None:
        """Without a ``boundary_ratio`` the pipeline never calls the second expert (half the model silently
        unused); either expert taking image channels fails at step 1."""
        if folder.index.get("boundary_ratio") is None:
            raise class_mismatch(
                folder, self, "it has a second transformer and no boundary_ratio, so that transformer would never run"
            )
        for component in ("transformer", "transformer_2"):
            refuse_image_channels(self, folder, component)

    def build_tiny(self) -> Any:
        from diffusers import WanPipeline

        return _evaluated(
            WanPipeline(
                **_tiny_parts(),
                transformer=_tiny_transformer(SEED),
                transformer_2=_tiny_transformer(SEED + 4),
                boundary_ratio=A14B_BOUNDARY_RATIO,
            )
        )


def tiny_umt5_encoder(vocab_size: int) -> Any:  # -> transformers.UMT5EncoderModel
    """The tiny UMT5 text encoder of every tiny Wan (``TEXT_DIM`` wide), random weights from the caller's seed."""
    return tiny_t5_encoder(vocab_size, umt5=True)


def build_tiny_wan() -> Any:  # -> diffusers.WanPipeline (imported lazily: diffusers costs seconds)
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    tokenizer = char_t5_tokenizer()
    torch.manual_seed(SEED)
    transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    torch.manual_seed(SEED + 2)
    text_encoder = tiny_umt5_encoder(len(tokenizer))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    )
