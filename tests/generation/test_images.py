"""The conditioning image: an upload checked (format by content, bytes, pixels, decompression bombs), turned
upright, flattened to RGB, cut to the request's size with a report, and kept under its sha256."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from components.generation.images import (
    ImageLimits,
    ImageUse,
    attach_image,
    check_image_use,
    check_request_image,
    decode_base64_image,
    image_use,
    prepare_image,
    shown_request,
)
from components.generation.request import GenerationRequest
from recovery.errors import InvalidParameterError

T2V = "kintsugi/tiny-wan-random"


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bilevel_png(width: int, height: int) -> bytes:
    """A real, complete 1-bit PNG of ``width``×``height`` zeros: a few kilobytes on disk however many pixels it
    has (a decompression bomb when they are many)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _refusal(source: bytes | Path, tmp_path: Path, limits: ImageLimits = ImageLimits()) -> InvalidParameterError:
    with pytest.raises(InvalidParameterError) as caught:
        prepare_image(source, 64, 64, tmp_path / "uploads", limits=limits)
    assert caught.value.parameter == "image"
    assert str(tmp_path) not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_are_prepared_as_rgb_png_at_the_size(fmt: str, tmp_path: Path) -> None:
    """A PNG, JPEG or WebP upload becomes an RGB PNG of exactly the request's size."""
    path, _ = prepare_image(_encoded(Image.new("RGB", (80, 48), (200, 40, 40)), fmt), 64, 32, tmp_path)
    with Image.open(path) as prepared:
        assert (prepared.format, prepared.mode, prepared.size) == ("PNG", "RGB", (64, 32))


def test_format_is_read_from_the_content_not_the_name(tmp_path: Path) -> None:
    """A JPEG saved under a .png name is a JPEG: accepted; its name plays no part."""
    misnamed = tmp_path / "photo.png"
    misnamed.write_bytes(_encoded(Image.new("RGB", (64, 64), "green"), "JPEG"))
    path, corrections = prepare_image(misnamed, 64, 64, tmp_path / "uploads")
    assert Path(path).is_file() and corrections == []


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (_encoded(Image.new("RGB", (8, 8)), "GIF"), "a GIF image"),
        (_encoded(Image.new("RGB", (8, 8)), "BMP"), "a BMP image"),
        (_encoded(Image.new("RGB", (8, 8)), "TIFF"), "a TIFF image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG or XML file"),
        (b"just some text, not an image", "data that is not an image of these formats"),
    ],
    ids=["gif", "bmp", "tiff", "svg", "text"],
)
def test_other_formats_are_refused_naming_what_they_are(data: bytes, kind: str, tmp_path: Path) -> None:
    """Anything but PNG, JPEG or WebP is refused, naming ``image`` and what was sent."""
    error = _refusal(data, tmp_path)
    assert error.value == kind and "PNG, JPEG or WebP" in str(error)


def test_more_bytes_than_the_limit_are_refused(tmp_path: Path) -> None:
    """An upload over the byte limit is refused with the limit and its size."""
    data = _encoded(Image.effect_noise((128, 128), 64).convert("RGB"), "PNG")
    error = _refusal(data, tmp_path, ImageLimits(max_bytes=len(data) - 1))
    assert "must be at most" in str(error)


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A file path over the byte limit is refused by its size on disk (a sparse 1 GB file is not read)."""
    huge = tmp_path / "huge.png"
    with huge.open("wb") as handle:
        handle.truncate(10**9)
    error = _refusal(huge, tmp_path)
    assert str(error) == "`image` must be at most 10.0 MiB (got 954 MiB)"


@pytest.mark.parametrize(
    ("width", "height", "limits"),
    [(9000, 8, ImageLimits()), (7000, 7000, ImageLimits()), (300, 300, ImageLimits(max_pixels=80_000))],
    ids=["side", "megapixels", "configured"],
)
def test_dimensions_over_the_limits_are_refused_from_the_header(
    width: int, height: int, limits: ImageLimits, tmp_path: Path
) -> None:
    """Too many pixels a side or in all is refused, with the dimensions, before the pixels are decoded."""
    error = _refusal(bilevel_png(width, height), tmp_path, limits)
    assert error.value == f"{width}×{height} pixels"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("side"), [10_000, 20_000], ids=["past-warning", "past-error"])
def test_a_decompression_bomb_is_refused(side: int, tmp_path: Path) -> None:
    """A real crafted bomb (a few KB of PNG, 100 or 400 megapixels) is refused by PIL's own threshold
    (``MAX_IMAGE_PIXELS``, where PIL only warns; ``DecompressionBombError`` past twice that) even when our own
    pixel limits are set above it."""
    bomb = bilevel_png(side, side)
    assert len(bomb) < 200_000 and side * side > Image.MAX_IMAGE_PIXELS
    error = _refusal(bomb, tmp_path, ImageLimits(max_side=10**6, max_pixels=10**12))
    assert "decompression bomb" in str(error)


def test_a_truncated_image_is_refused(tmp_path: Path) -> None:
    """A PNG cut short is refused as damaged or truncated, not a raw decoder error."""
    data = _encoded(Image.effect_noise((64, 64), 64).convert("RGB"), "PNG")
    error = _refusal(data[: len(data) // 2], tmp_path)
    assert "damaged or truncated" in str(error)


def test_exif_orientation_is_applied_and_reported(tmp_path: Path) -> None:
    """A landscape JPEG whose EXIF says "rotate 90° clockwise" is used upright (portrait), and that is said."""
    landscape = Image.new("RGB", (40, 20), (220, 0, 0))
    landscape.paste((0, 0, 220), (0, 10, 40, 20))  # top red, bottom blue
    exif = Image.Exif()
    exif[0x0112] = 6
    path, corrections = prepare_image(_encoded(landscape, "JPEG", exif=exif), 20, 40, tmp_path)
    assert corrections == ["image turned upright as its EXIF orientation (6) says"]
    with Image.open(path) as upright:
        left, right = upright.getpixel((2, 20)), upright.getpixel((17, 20))
    assert left[2] > 150 > left[0] and right[0] > 150 > right[2]  # the top went to the right


def test_transparency_is_flattened_onto_white(tmp_path: Path) -> None:
    """A transparent PNG is composited onto white (not black), and that is said."""
    path, corrections = prepare_image(_encoded(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG"), 16, 16, tmp_path)
    assert corrections == ["image transparency flattened onto white"]
    with Image.open(path) as flat:
        assert flat.getpixel((8, 8)) == (255, 255, 255)


def test_an_animated_image_uses_its_first_frame(tmp_path: Path) -> None:
    """An animated WebP is one image here: its first frame, said so."""
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    data = _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    path, corrections = prepare_image(data, 16, 16, tmp_path)
    assert corrections == ["image has 2 frames: the first is used"]
    with Image.open(path) as first:
        assert first.getpixel((8, 8)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ((640, 480), (256, 256), ["image 640×480 → cropped and resized to 256×256"]),
        ((512, 512), (256, 256), ["image 512×512 → resized to 256×256"]),
        ((256, 320), (256, 256), ["image 256×320 → cropped to 256×256"]),
        ((64, 48), (64, 48), []),
    ],
    ids=["crop-and-resize", "resize", "crop", "as-is"],
)
def test_the_change_to_the_requests_size_is_reported(
    source: tuple[int, int], target: tuple[int, int], expected: list[str], tmp_path: Path
) -> None:
    """Each way of reaching the request's size is one correction line; an image already at it has none."""
    _path, corrections = prepare_image(_encoded(Image.new("RGB", source, "gray"), "PNG"), *target, tmp_path)
    assert corrections == expected


def test_the_crop_keeps_the_centre(tmp_path: Path) -> None:
    """A wide image loses equal strips left and right: red and blue edges go, the green centre stays."""
    wide = Image.new("RGB", (96, 64), (0, 200, 0))
    wide.paste((200, 0, 0), (0, 0, 16, 64))
    wide.paste((0, 0, 200), (80, 0, 96, 64))
    path, _ = prepare_image(_encoded(wide, "PNG"), 64, 64, tmp_path)
    with Image.open(path) as cut:
        colours = {colour for _count, colour in cut.getcolors(64 * 64)}
    assert colours == {(0, 200, 0)}


def test_prepared_images_are_named_by_their_content(tmp_path: Path) -> None:
    """The same upload at the same size is one file named by its sha256; another image is another file."""
    first = _encoded(Image.new("RGB", (64, 64), "red"), "PNG")
    path, _ = prepare_image(first, 32, 32, tmp_path)
    again, _ = prepare_image(first, 32, 32, tmp_path)
    other, _ = prepare_image(_encoded(Image.new("RGB", (64, 64), "blue"), "PNG"), 32, 32, tmp_path)
    assert path == again != other
    assert Path(path).name == hashlib.sha256(Path(path).read_bytes()).hexdigest() + ".png"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({Path(path).name, Path(other).name})


def test_a_damaged_copy_is_rewritten_whole_and_nothing_partial_is_left(tmp_path: Path) -> None:
    """A prepared file cut short on disk is written again beside its name and renamed in: the name holds the
    whole image and no partial file stays behind."""
    data = _encoded(Image.effect_noise((64, 64), 64).convert("RGB"), "PNG")
    path, _ = prepare_image(data, 64, 64, tmp_path)
    whole = Path(path).read_bytes()
    Path(path).write_bytes(whole[:100])
    assert prepare_image(data, 64, 64, tmp_path)[0] == path
    assert Path(path).read_bytes() == whole
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda text: text,
        lambda text: "data:image/png;base64," + text,
        lambda text: "\n".join(text[i : i + 76] for i in range(0, len(text), 76)),
    ],
    ids=["bare", "data-url", "mime-lines"],
)
def test_base64_is_read_bare_or_as_a_data_url(wrap, tmp_path: Path) -> None:
    """Bare base64, a data URL and base64 broken into lines all give the same bytes."""
    data = _encoded(Image.effect_noise((32, 32), 64).convert("RGB"), "PNG")
    assert decode_base64_image(wrap(base64.b64encode(data).decode())) == data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not base64 at all!", "must be base64 text or a data URL"),
        ("data:image/png,iVBORw0KGgo=", "must be a base64 data URL"),
        ("", "must not be empty"),
    ],
    ids=["not-base64", "data-url-not-base64", "empty"],
)
def test_bad_base64_is_refused_naming_image(text: str, expected: str) -> None:
    """Text that is not base64, a data URL that is not base64, and nothing at all are refused, named."""
    with pytest.raises(InvalidParameterError, match=expected) as caught:
        decode_base64_image(text)
    assert caught.value.parameter == "image"


def test_base64_too_long_is_refused_before_decoding() -> None:
    """Base64 longer than the byte limit allows is refused by its length."""
    with pytest.raises(InvalidParameterError, match="must be at most"):
        decode_base64_image("A" * 4000, max_bytes=1024)


def test_a_text_to_video_model_refuses_an_image() -> None:
    """The Wan text-to-video model takes no image: refused naming ``image`` and the model, before any run."""
    assert image_use(T2V) is ImageUse.NOT_TAKEN
    with pytest.raises(InvalidParameterError, match="is not taken by kintsugi/tiny-wan-random") as caught:
        check_image_use(T2V, True)
    assert caught.value.parameter == "image"
    check_image_use(T2V, False)


def test_a_model_unknown_by_id_is_left_to_its_folder() -> None:
    """A hub id no family knows is neither refused nor required an image here (its folder decides at load)."""
    assert image_use("someone/some-model") is ImageUse.UNKNOWN
    check_image_use("someone/some-model", True)
    check_image_use("someone/some-model", False)


def test_attach_cuts_the_image_at_the_size_validation_runs(tmp_path: Path) -> None:
    """A width validation corrects (100 → 96) is the width the image is cut to; the request keeps its fields."""
    request = GenerationRequest(prompt="a boat", width=100, height=64, model_id="someone/some-model", seed=None)
    attached, corrections = attach_image(request, _encoded(Image.new("RGB", (100, 64)), "PNG"), tmp_path)
    with Image.open(attached.image) as used:
        assert used.size == (96, 64)
    assert corrections == ["image 100×64 → cropped to 96×64"]
    assert (attached.width, attached.seed) == (100, None)


def test_attach_refuses_an_image_for_a_text_to_video_model_before_reading_it(tmp_path: Path) -> None:
    """A text-to-video model refuses the image before its bytes are looked at: nothing is written."""
    with pytest.raises(InvalidParameterError, match="not taken"):
        attach_image(GenerationRequest(prompt="a boat", model_id=T2V), b"anything", tmp_path)
    assert not tmp_path.joinpath("uploads").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("make", "expected"),
    [(lambda folder: folder / "gone.png", "missing"), (lambda folder: folder / "small.png", "32×32")],
    ids=["missing", "wrong-size"],
)
def test_a_request_image_must_be_readable_at_the_requests_size(make, expected: str, tmp_path: Path) -> None:
    """At admission a request's image file must exist and be at its size; the refusal shows no path."""
    Image.new("RGB", (32, 32)).save(tmp_path / "small.png")
    request = GenerationRequest(
        prompt="a", width=64, height=64, model_id="someone/some-model", image=str(make(tmp_path))
    )
    with pytest.raises(InvalidParameterError) as caught:
        check_request_image(request)
    assert (
        caught.value.parameter == "image" and expected in str(caught.value) and str(tmp_path) not in str(caught.value)
    )


def test_a_shown_request_names_its_image_by_file_name() -> None:
    """What a client sees of a request holds the image's file name, not where it lies."""
    assert shown_request({"prompt": "a", "image": "/data/uploads/abc.png"}) == {"prompt": "a", "image": "abc.png"}
    assert shown_request({"prompt": "a", "image": None}) == {"prompt": "a", "image": None}
