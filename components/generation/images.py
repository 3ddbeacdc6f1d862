"""The conditioning image of an image-to-video request: an upload checked, prepared and kept.

An upload (bytes from REST, a file path from the page) is refused, naming ``image``, unless it is a PNG, JPEG or
WebP image by its content (not its name), within a byte size, within pixel dimensions, and decodable without
becoming a decompression bomb (``Image.MAX_IMAGE_PIXELS`` and our own, lower, pixel limit, checked from the header
before any pixel is decoded). It is then turned upright (EXIF orientation), flattened to RGB, centre-cropped and
resized to the request's width×height, each change reported as a correction line::

    path, corrections = prepare_image(upload, 256, 256, settings.uploads_dir)
    # corrections == ["image 640×480 → cropped and resized to 256×256"]

The prepared PNG is named by its sha256 in the uploads folder (written beside, then renamed), so a journaled
request's image is still there for its re-run after a restart and the same upload for the same size is one file.
``attach_image`` does the whole thing for a request (at the size validation will run it at); ``check_image_use``
refuses, before anything runs, an image for a model known to be text-to-video or none for one that needs one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from components.generation.families import family_for_model_id
from components.generation.request import GenerationRequest, validate_request
from components.system.files import hash_file, replacing
from recovery.errors import InvalidParameterError
from recovery.messages import format_bytes

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_IMAGE_BYTES",
    "ImageLimits",
    "ImageUse",
    "attach_image",
    "check_image_use",
    "check_request_image",
    "decode_base64_image",
    "image_use",
    "prepare_image",
    "shown_request",
]

#: What an upload may be, by content: PIL's format names.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
DEFAULT_MAX_IMAGE_BYTES = 10 * 2**20
_ORIENTATION = 0x0112  # the EXIF tag


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may weigh and measure. ``max_pixels`` is far below PIL's own bomb threshold
    (``Image.MAX_IMAGE_PIXELS``, about 89 million), so a large image is refused before it is decoded."""

    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_side: int = 8192
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_side, self.max_pixels) <= 0:
            raise ValueError("image limits must be positive")


class ImageUse(str, Enum):
    """What a model does with an image, as far as its id tells."""

    NOT_TAKEN = "not taken"  # text-to-video: an image is refused
    OPTIONAL = "optional"  # text- and image-to-video
    REQUIRED = "required"  # image-to-video only
    UNKNOWN = "unknown"  # a model not known by id: its folder decides when it is loaded


def _refuse(constraint: str, got: str) -> InvalidParameterError:
    """The refusal of an upload: ``got`` describes it (a format, a size), never echoes its bytes or its path."""
    return InvalidParameterError(
        f"`image` {constraint} (got {got})", parameter="image", value=got, constraint=constraint
    )


# -- which models take an image --------------------------------------------------------------------------------------
def image_use(model_id: str) -> ImageUse:
    family = family_for_model_id(model_id)
    if family is None:
        return ImageUse.UNKNOWN
    if family.needs_image:
        return ImageUse.REQUIRED
    return ImageUse.OPTIONAL if family.takes_image else ImageUse.NOT_TAKEN


def check_image_use(model_id: str, has_image: bool) -> None:
    """Refuse, naming ``image``, an image for a model known to be text-to-video, or no image for one known to need
    one (before any download or run; a model not known by id is checked when its folder is read)."""
    family = family_for_model_id(model_id)
    if family is None:
        return
    if has_image and not family.takes_image:
        constraint = f"is not taken by {model_id}, a {family.label} model (it makes videos from text only)"
        raise InvalidParameterError(
            f"`image` {constraint} (got an image)", parameter="image", value="an image", constraint=constraint
        )
    if not has_image and family.needs_image:
        constraint = f"is required by {model_id}, a {family.label} model (it makes a video from an image)"
        raise InvalidParameterError(
            f"`image` {constraint} (got no image)", parameter="image", value=None, constraint=constraint
        )


# -- reading an upload ---------------------------------------------------------------------------------------------
def decode_base64_image(text: str, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """The bytes of ``data:image/...;base64,...`` or of bare base64, refused naming ``image`` when it is not
    base64 or decodes to more than ``max_bytes`` (checked from its length first, before decoding)."""
    if not isinstance(text, str):
        raise _refuse("must be base64 text or a data URL", "a value that is not text")
    payload = text.strip()
    if payload.startswith("data:"):
        header, comma, payload = payload.partition(",")
        if not comma or not header.endswith(";base64"):
            raise _refuse("must be a base64 data URL (data:image/png;base64,...)", "a data URL that is not base64")
    payload = "".join(payload.split())  # line breaks of MIME-style base64
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise _refuse(f"must be at most {format_bytes(max_bytes)}", f"about {format_bytes(len(payload) // 4 * 3)}")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("must be base64 text or a data URL", "text that is not base64") from None
    if not data:
        raise _refuse("must not be empty", "no bytes")
    return data


def _sniffed(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _kind(head: bytes) -> str:
    """What a refused upload looks like, for the message."""
    for magic, kind in (
        (b"GIF8", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"%PDF", "a PDF document"),
        (b"\x00\x00\x00\x0cjP", "a JPEG 2000 image"),
    ):
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return "an HEIC/AVIF image or a video"
    if head.lstrip().startswith((b"<svg", b"<?xml")):
        return "an SVG or XML file"
    return "data that is not an image of these formats"


def _read(source: bytes | str | os.PathLike[str], max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise _refuse(f"must be at most {format_bytes(max_bytes)}", format_bytes(size))
            data = path.read_bytes()
        except OSError:
            raise _refuse("must be a readable file", "a file that cannot be read") from None
    if not data:
        raise _refuse("must not be empty", "an empty file")
    if len(data) > max_bytes:
        raise _refuse(f"must be at most {format_bytes(max_bytes)}", format_bytes(len(data)))
    return data


def _decoded(data: bytes, limits: ImageLimits) -> tuple[Any, str]:
    """The upload decoded (its first frame), after its format and header dimensions passed; and its format."""
    from PIL import Image

    fmt = _sniffed(data[:16])
    if fmt is None:
        raise _refuse("must be a PNG, JPEG or WebP image", _kind(data[:16]))
    bomb = _refuse("is too large to decode safely (a decompression bomb is refused)", f"a {fmt} image of that size")
    try:
        # PIL raises past twice MAX_IMAGE_PIXELS (only warning past it: refused here too, without touching the
        # process-wide warning filters, which other threads share).
        image = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = image.size
        if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
            raise bomb
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise _refuse(
                f"must be at most {limits.max_side} pixels a side and {limits.max_pixels / 1e6:g} megapixels",
                f"{width}×{height} pixels",
            )
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bomb from None
    except InvalidParameterError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
        raise _refuse(f"must be a whole {fmt} image", f"a {fmt} file that is damaged or truncated") from None
    return image, fmt


# -- preparing it ----------------------------------------------------------------------------------------------------
def _rgb(image: Any, corrections: list[str]) -> Any:
    """RGB, a transparent part flattened onto white (and said so)."""
    from PIL import Image

    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            corrections.append("image transparency flattened onto white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _fitted(image: Any, width: int, height: int, corrections: list[str]) -> Any:
    """Centre-cropped to the target's aspect ratio, then resized to it, the change reported."""
    from PIL import Image, ImageOps

    source = image.size
    if source == (width, height):
        return image
    crop_w, crop_h = (
        (round(source[1] * width / height), source[1])
        if source[0] * height > source[1] * width
        else (source[0], round(source[0] * height / width))
    )
    cropped, resized = (crop_w, crop_h) != source, (crop_w, crop_h) != (width, height)
    how = "cropped and resized" if cropped and resized else "cropped" if cropped else "resized"
    corrections.append(f"image {source[0]}×{source[1]} → {how} to {width}×{height}")
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def prepare_image(
    source: bytes | str | os.PathLike[str],
    width: int,
    height: int,
    uploads_dir: str | os.PathLike[str],
    *,
    limits: ImageLimits = ImageLimits(),
) -> tuple[str, list[str]]:
    """Check an upload, bring it to ``width``×``height`` RGB and keep it as ``<uploads_dir>/<sha256>.png``;
    return that path and the corrections made (one line each). Anything wrong is an ``InvalidParameterError``
    naming ``image``, its value described (never the path)."""
    from PIL import ImageOps

    image, _fmt = _decoded(_read(source, limits.max_bytes), limits)
    corrections: list[str] = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        corrections.append(f"image has {frames} frames: the first is used")
    orientation = image.getexif().get(_ORIENTATION, 1)
    if orientation in range(2, 9):  # 1 is upright; 2-8 mirror and/or rotate
        image = ImageOps.exif_transpose(image)
        corrections.append(f"image turned upright as its EXIF orientation ({orientation}) says")
    image = _fitted(_rgb(image, corrections), width, height, corrections)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    data = encoded.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    target = Path(uploads_dir) / f"{digest}.png"
    if not (target.is_file() and hash_file(target)["sha256"] == digest):
        with replacing(target) as partial:
            partial.write_bytes(data)
            if hash_file(partial)["sha256"] != digest:
                raise OSError(f"the prepared image did not read back as written: {target.name}")
    return str(target), corrections


def attach_image(
    request: GenerationRequest,
    source: bytes | str | os.PathLike[str],
    uploads_dir: str | os.PathLike[str],
    *,
    limits: ImageLimits = ImageLimits(),
) -> tuple[GenerationRequest, list[str]]:
    """``request`` with ``source`` prepared as its image, at the size validation will run it at (a side that
    validation corrects, e.g. 100 → 96, is the size the image is cut to), and the corrections made. Refused first,
    naming ``image``, when the model is known not to take one; an invalid request is refused as ``generate`` would
    refuse it."""
    check_image_use(request.model_id, True)
    checked, _ = validate_request(replace(request, image=None, seed=request.seed if request.seed is not None else 0))
    path, corrections = prepare_image(source, checked.width, checked.height, uploads_dir, limits=limits)
    return replace(request, image=path), corrections


def check_request_image(request: GenerationRequest) -> None:
    """At admission: the model takes the image it got (or got one it needs), and the image is a readable image
    file at the request's size (as ``attach_image`` prepares it). Refusals name ``image``, never the path."""
    check_image_use(request.model_id, request.image is not None)
    if request.image is None:
        return
    from PIL import Image

    try:
        with Image.open(request.image, formats=list(ACCEPTED_FORMATS)) as opened:
            size = opened.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse(
            "must be an image the app prepared (components.generation.images.attach_image)",
            "a file that is missing or not a PNG, JPEG or WebP image",
        ) from None
    if size != (request.width, request.height):
        raise _refuse(
            f"must be prepared at the request's size {request.width}×{request.height} "
            "(components.generation.images.attach_image)",
            f"{size[0]}×{size[1]}",
        )


def shown_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """A request as a client may see it: its image by file name (the prepared PNG's sha256), never a path."""
    shown = dict(request)
    if shown.get("image"):
        shown["image"] = Path(str(shown["image"])).name
    return shown
