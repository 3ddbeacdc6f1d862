"""What a model will take in memory, read from its folder before anything is loaded.

Two parts. Weight bytes: a safetensors file starts with an 8-byte little-endian length and a JSON header that lists
every tensor's dtype and shape, enough to know each component's weight bytes without reading a single weight.
And a physical prior: the transformer's and the VAE's ``config.json`` (layers, width, heads, patch size, latent
compression, decoder widths, how the VAE splits a clip into chunks) with the request give, per phase,

* load: a fixed process part plus the weights as loaded (in each component's run dtype: a VAE kept in fp32 counts
  four bytes a weight, ``generation.precision``) and their files, mapped while they are read;
* denoise: the loaded weights plus activations per latent token (``batch × tokens × (4·width + ffn width) ×
  dtype bytes``, the batch doubled where the pipeline batches classifier-free guidance), plus ``heads × tokens²``
  only where the attention backend materialises the scores (SDPA's fused kernels, on the CPU and on CUDA, do not);
* decode: the loaded weights plus the VAE decoder's working set for one chunk (frames per chunk × the chunk's
  area × the decoder's widths summed over its resolutions, the area one tile's when tiling applies), its weights
  reordered for the kernels, a masked mid-block attention's tokens² where it has one, and the output video;

each term scaled by one of a few coefficients fitted once from measurements (``components.memory.calibration
.PRIOR_COEFFICIENTS``, with where they came from). The planner starts from this prior for a model it has never
measured; its own measurements take over as runs accumulate.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DTYPE_BYTES",
    "ModelPrior",
    "PriorCoefficients",
    "TransformerShape",
    "VaeShape",
    "read_prior",
    "safetensors_header",
    "weight_bytes",
]

#: Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_FLOATING = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_MAX_HEADER = 100 * 2**20  # the format's own limit; a larger length field is a damaged or hostile file


def safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name → dtype, shape, offsets), read without the weights."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError(f"{Path(path).name}: too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"{Path(path).name}: header length {length} is over the format's limit")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{Path(path).name}: the header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def weight_bytes(
    folder: str | os.PathLike[str], dtype_bytes: int = 2, component_dtype_bytes: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Bytes each component's weights take once loaded: floating tensors in the run dtype (``dtype_bytes``, or
    ``component_dtype_bytes[component]`` for a component run in another, e.g. a VAE in fp32), others as stored.
    Components are the folder's sub-folders holding ``*.safetensors`` files."""
    root = Path(folder)
    overrides = dict(component_dtype_bytes or {})
    sizes: dict[str, int] = {}
    for file in sorted(root.glob("*/*.safetensors")):
        component = file.parent.name
        width = overrides.get(component, dtype_bytes)
        total = 0
        for entry in safetensors_header(file).values():
            stored = str(entry.get("dtype"))
            count = math.prod(int(side) for side in entry.get("shape", ()))
            total += count * (width if stored in _FLOATING else DTYPE_BYTES.get(stored, 4))
        sizes[component] = sizes.get(component, 0) + total
    return sizes


# -- the physical prior -----------------------------------------------------------------------------------------------
#: Text tokens that join the video tokens in one attention sequence (joint attention), per transformer class: the
#: call's ``max_sequence_length`` (CogVideoX reads ``max_text_seq_length`` from the config instead).
_JOINT_TEXT_TOKENS = {"HunyuanVideoTransformer3DModel": 256}
#: Pipelines that run classifier-free guidance as one batch of two (the others call the transformer twice).
_BATCHED_GUIDANCE = {"CogVideoXPipeline", "CogVideoXImageToVideoPipeline", "LTXPipeline", "LTXImageToVideoPipeline"}


@dataclass(frozen=True)
class PriorCoefficients:
    """The free coefficients of the prior, in the planner's unit (``components.memory.calibration``).

    ``fixed``: bytes a run takes before any weight (lazily imported code, allocator arenas); ``loading`` and
    ``mapping``: per byte of weights as loaded and per byte of their files, while loading (the files are mapped
    beside the tensors they become, in another dtype when stored in one); ``weights``: per byte of weights once
    loaded; ``decode_weights``: per byte of the VAE's weights while it decodes (its convolutions' weights
    reordered for the kernels); ``compute``: bytes the first computation adds whatever its size;
    ``activations``, ``attention``, ``output``, ``vae_attention``: per byte of each feature; ``decoder``: per byte
    of the decoder's working set, by VAE class (decoders of the same widths hold very different temporaries),
    ``decoder_default`` for another."""

    fixed: float
    loading: float
    activations: float
    output: float
    mapping: float = 0.0
    decode_weights: float = 0.0
    decoder: Mapping[str, float] = field(default_factory=dict)
    decoder_default: float = 1.0
    weights: float = 1.0
    compute: float = 0.0
    vae_attention: float = 1.0
    attention: float = 1.0
    source: str = ""

    def decoder_for(self, kind: str) -> float:
        return self.decoder.get(kind, self.decoder_default)


@dataclass(frozen=True)
class TransformerShape:
    """What sets a denoising step's activations (one transformer; ``count`` of them loaded, one runs at a time)."""

    layers: int
    heads: int
    head_dim: int
    ffn: int
    patch: tuple[int, int, int]  # (frames, height, width) latent voxels per token
    joint_text_tokens: int = 0
    count: int = 1

    @property
    def width(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class VaeShape:
    """What sets a decode's working set. ``widths``: the decoder's channel widths from its lowest resolution to its
    output resolution (each level twice the side of the one before); ``patch``: output pixels per side of one
    decoder output position (a VAE that unpatchifies, as Wan 2.2's and LTX's do); ``chunk_latent_frames``: latent
    frames decoded per call (``None``: the whole clip; ``framewise_above``: only when the clip has more latent
    frames than that, else whole); ``tile``/``stride``: (height, width) of a tile and of the step between tiles in
    pixels when tiling is on (a tiled decode keeps every overlapping tile's output until it blends them)."""

    kind: str
    spatial: int
    temporal: int
    widths: tuple[int, ...]
    patch: int = 1
    chunk_latent_frames: int | None = None
    framewise_above: int | None = None
    tile: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    #: A mid-block attention over the chunk's latent tokens with a mask (HunyuanVideo's causal one): the mask and
    #: the scores, tokens² each, exist in full (SDPA's fused kernels take no such mask on the CPU).
    masked_attention: bool = False

    def chunk_frames(self, frames: int) -> int:
        """Output frames one decoder call produces (the decoder's working set is per call)."""
        latent = (frames - 1) // self.temporal + 1
        if self.chunk_latent_frames is None or (self.framewise_above is not None and latent <= self.framewise_above):
            return frames
        return min(frames, self.chunk_latent_frames * self.temporal + (1 if self.framewise_above else 0))

    def per_pixel_width(self) -> float:
        """Channels per output pixel summed over the decoder's resolutions (a level at half the side counts ¼)."""
        levels = len(self.widths)
        return sum(w * 4.0 ** -(levels - 1 - i) for i, w in enumerate(self.widths)) / self.patch**2


@dataclass(frozen=True)
class ModelPrior:
    """A model's memory, before any run: weights per component as loaded, its transformer and VAE shapes and
    the bytes per element each runs in. ``predict`` gives the peak per phase for a request."""

    model_class: str
    weights: Mapping[str, int]
    stored: Mapping[str, int] = field(default_factory=dict)  # bytes of each component's weight files
    transformer: TransformerShape | None = None
    vae: VaeShape | None = None
    transformer_bytes: int = 2
    vae_bytes: int = 2
    batched_guidance: bool = False

    @property
    def total_weights(self) -> int:
        return sum(self.weights.values())

    def latent_tokens(self, frames: int, width: int, height: int) -> int:
        """Video tokens the transformer attends over (latent frames × latent rows × columns, per patch)."""
        if self.vae is None or self.transformer is None:
            return 0
        pt, ph, pw = self.transformer.patch
        latent_frames = -(-((frames - 1) // self.vae.temporal + 1) // pt)
        return latent_frames * (height // self.vae.spatial // ph) * (width // self.vae.spatial // pw)

    def features(
        self,
        frames: int,
        width: int,
        height: int,
        *,
        guidance_scale: float = 5.0,
        vae_tiling: bool = False,
        attention_materialised: bool = False,
    ) -> dict[str, float]:
        """The physical quantities (bytes) each coefficient scales."""
        act = attention = decoder = tiles = vae_attention = 0.0
        if self.transformer is not None:
            batch = 2 if self.batched_guidance and guidance_scale > 1 else 1
            tokens = self.latent_tokens(frames, width, height) + self.transformer.joint_text_tokens
            shape = self.transformer
            act = batch * tokens * (4 * shape.width + shape.ffn) * self.transformer_bytes
            if attention_materialised:
                attention = batch * shape.heads * tokens**2 * self.transformer_bytes
        if self.vae is not None:
            area = width * height
            tile, stride = self.vae.tile, self.vae.stride or self.vae.tile
            if vae_tiling and tile is not None and stride is not None and (height > tile[0] or width > tile[1]):
                area = min(area, tile[0] * tile[1])
                overlap = tile[0] * tile[1] / (stride[0] * stride[1])
                tiles = frames * width * height * 3 * self.vae_bytes * overlap
            chunk = self.vae.chunk_frames(frames)
            decoder = chunk * area * self.vae.per_pixel_width() * self.vae_bytes
            if self.vae.masked_attention:
                tokens = ((chunk - 1) // self.vae.temporal + 1) * area // self.vae.spatial**2
                vae_attention = 2.0 * tokens**2 * self.vae_bytes
        return dict(
            weights=float(self.total_weights),
            stored=float(sum(self.stored.values())),
            vae_weights=float(self.weights.get("vae", 0)),
            activations=float(act),
            attention=float(attention),
            decoder=float(decoder),
            vae_attention=float(vae_attention),
            output=float(frames * width * height * 3 * 4 + tiles),  # the decoded clip as float32 RGB
        )

    def predict(
        self,
        frames: int,
        width: int,
        height: int,
        coefficients: PriorCoefficients,
        *,
        guidance_scale: float = 5.0,
        vae_tiling: bool = False,
        model_cpu_offload: bool = False,
        attention_materialised: bool = False,
    ) -> dict[str, float]:
        """Peak need through each phase (``load``, ``denoise``, ``decode``; ``total`` = the largest), in bytes of
        the coefficients' unit. With model CPU offload only the running component's weights count (its device's
        memory is the unit then; the CPU has no offload)."""
        f = self.features(
            frames,
            width,
            height,
            guidance_scale=guidance_scale,
            vae_tiling=vae_tiling,
            attention_materialised=attention_materialised,
        )
        c = coefficients
        if model_cpu_offload:
            vae = float(self.weights.get("vae", 0))
            transformer_weights = float(sum(v for k, v in self.weights.items() if k.startswith("transformer")))
            if self.transformer is not None and self.transformer.count > 1:  # one expert on the device at a time
                transformer_weights /= self.transformer.count
            load = c.fixed
            denoise = c.fixed + c.weights * transformer_weights
            decode = c.fixed + c.weights * vae
        else:
            load = c.fixed + c.loading * f["weights"] + c.mapping * f["stored"]
            denoise = decode = c.fixed + c.weights * f["weights"]
        kind = self.vae.kind if self.vae is not None else ""
        denoise += c.compute + c.activations * f["activations"] + c.attention * f["attention"]
        decode += (
            c.compute
            + c.decode_weights * f["vae_weights"]
            + c.decoder_for(kind) * f["decoder"]
            + c.vae_attention * f["vae_attention"]
            + c.output * f["output"]
        )
        phases = dict(load=load, denoise=max(load, denoise))
        phases["decode"] = max(phases["denoise"], decode)
        phases["total"] = phases["decode"]
        return phases


def _int(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _transformer_shape(config: Mapping[str, Any], count: int) -> TransformerShape | None:
    heads, head_dim = _int(config, "num_attention_heads", 0), _int(config, "attention_head_dim", 0)
    if not heads or not head_dim:
        return None
    name = str(config.get("_class_name", ""))
    width = heads * head_dim
    patch = config.get("patch_size", 1)
    if isinstance(patch, (list, tuple)) and len(patch) == 3:
        frames_patch, height_patch, width_patch = (int(p) for p in patch)
    else:
        side = int(patch or 1)
        frames_patch, height_patch, width_patch = _int(config, "patch_size_t", 1), side, side
    ffn = _int(config, "ffn_dim", 0) or int(float(config.get("mlp_ratio") or 4.0) * width)
    joint = _int(config, "max_text_seq_length", 0) or _JOINT_TEXT_TOKENS.get(name, 0)
    return TransformerShape(
        layers=_int(config, "num_layers", 1) + _int(config, "num_single_layers", 0),
        heads=heads,
        head_dim=head_dim,
        ffn=ffn,
        patch=(frames_patch, height_patch, width_patch),
        joint_text_tokens=joint,
        count=count,
    )


def _vae_shape(config: Mapping[str, Any]) -> VaeShape | None:
    """The decoder of each VAE class the families use (diffusers 0.42.1's defaults for what the config omits)."""
    name = str(config.get("_class_name", ""))
    if name == "AutoencoderKLWan":
        mult = [int(m) for m in config.get("dim_mult") or (1, 2, 4, 4)]
        base = _int(config, "decoder_base_dim", 0) or _int(config, "base_dim", 96)
        dims = [base * m for m in [mult[-1], *mult[::-1]]]
        patch = _int(config, "patch_size", 1) or 1
        spatial = _int(config, "scale_factor_spatial", 0) or 2 ** (len(mult) - 1) * patch
        # At each resolution the widest tensor is the upsampler's input, still of the lower level's width.
        return VaeShape(
            name,
            spatial,
            _int(config, "scale_factor_temporal", 4),
            tuple(dims[:-1]),
            patch=patch,
            chunk_latent_frames=1,  # causal: one latent frame per decoder call, a feature cache between calls
            tile=(256, 256),
            stride=(192, 192),
        )
    blocks = [int(w) for w in (config.get("decoder_block_out_channels") or config.get("block_out_channels") or ())]
    if not blocks:
        return None
    levels, ordered = len(blocks), blocks[::-1]
    # Each up block upsamples at its own width, so a level holds its block's and the level below's widths.
    widths = tuple(max(ordered[i], ordered[i - 1] if i else 0) for i in range(levels))
    if name == "AutoencoderKLCogVideoX":
        tile = (_int(config, "sample_height", 480) // 2, _int(config, "sample_width", 720) // 2)
        temporal = _int(config, "temporal_compression_ratio", 4)
        return VaeShape(name, 2 ** (levels - 1), temporal, widths, chunk_latent_frames=2, tile=tile, stride=tile)
    if name == "AutoencoderKLHunyuanVideo":
        temporal = _int(config, "temporal_compression_ratio", 4)
        return VaeShape(
            name,
            _int(config, "spatial_compression_ratio", 8),
            temporal,
            widths,
            chunk_latent_frames=16 // temporal,  # framewise decoding (on by default): 16-frame tiles
            framewise_above=16 // temporal,
            tile=(256, 256),
            stride=(192, 192),
            masked_attention=bool(config.get("mid_block_add_attention", True)),
        )
    if name == "AutoencoderKLLTXVideo":
        scaling = config.get("decoder_spatio_temporal_scaling") or config.get("spatio_temporal_scaling") or ()
        ups = sum(1 for s in scaling if s)
        patch, patch_t = _int(config, "patch_size", 4), _int(config, "patch_size_t", 1)
        spatial = _int(config, "spatial_compression_ratio", 0) or patch * 2**ups
        temporal = _int(config, "temporal_compression_ratio", 0) or patch_t * 2**ups
        return VaeShape(name, spatial, temporal, widths, patch=patch, tile=(512, 512), stride=(448, 448))
    spatial = _int(config, "spatial_compression_ratio", 2 ** (levels - 1))
    return VaeShape(name or "unknown", spatial, _int(config, "temporal_compression_ratio", 4), widths)


def _config(folder: Path, component: str) -> dict[str, Any]:
    try:
        data = json.loads((folder / component / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_prior(
    folder: str | os.PathLike[str], dtype_bytes: int = 2, component_dtype_bytes: Mapping[str, int] | None = None
) -> ModelPrior | None:
    """The prior of the model in ``folder`` from its headers and configs alone (no weight read, no torch), or
    ``None`` when its index or its transformer's and VAE's configs are unreadable (the planner then falls back to
    the weights alone)."""
    root = Path(folder)
    try:
        index = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict):
        return None
    transformer_config, vae_config = _config(root, "transformer"), _config(root, "vae")
    second = index.get("transformer_2")
    count = 2 if isinstance(second, (list, tuple)) and second and second[0] is not None else 1
    transformer, vae = _transformer_shape(transformer_config, count), _vae_shape(vae_config)
    if transformer is None or vae is None:
        return None
    widths = dict(component_dtype_bytes or {})
    stored: dict[str, int] = {}
    for file in root.glob("*/*.safetensors"):
        stored[file.parent.name] = stored.get(file.parent.name, 0) + file.stat().st_size
    return ModelPrior(
        model_class=str(index.get("_class_name", "")),
        weights=weight_bytes(root, dtype_bytes, widths),
        stored=stored,
        transformer=transformer,
        vae=vae,
        transformer_bytes=widths.get("transformer", dtype_bytes),
        vae_bytes=widths.get("vae", dtype_bytes),
        batched_guidance=str(index.get("_class_name", "")) in _BATCHED_GUIDANCE,
    )
