"""Uploaded image bytes as every stage opens them: the input limits, the header read by Pillow
from the accepted formats only, and one classification of what decoding can fail with, so that
the same bad photo fails with the same reason in every stage."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager

import pillow_heif
from PIL import Image, UnidentifiedImageError

from functions.common.config import InputLimits
from functions.common.errors import PermanentError, TransientError

# Pillow's own decompression-bomb check warns or refuses at its fixed limit as the header is
# read; open_image checks InputLimits.max_pixels against the header instead.
Image.MAX_IMAGE_PIXELS = None
pillow_heif.register_heif_opener()

# The receiver's IMAGE_EXTENSIONS; a multi-picture JPEG (MPO) opens through the JPEG plugin.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "TIFF", "GIF", "BMP")
EXIF_ORIENTATION = 0x0112
# How to show a photo stored in EXIF orientation 2-8 the way it is meant to be seen.
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# The orientations whose displayed width is the stored height.
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
# The TIFF tags that give the size of the blocks its pixels are stored in.
_BITS_PER_SAMPLE, _PHOTOMETRIC, _SAMPLES, _ROWS_PER_STRIP = 258, 262, 277, 278
_TILE_WIDTH, _TILE_LENGTH = 322, 323
_YCBCR = 6


def open_image(data: bytes, limits: InputLimits) -> Image.Image:
    """The image with only its header read, within `limits`; `load()` decodes the pixels.

    PermanentError "too_large" over a limit, "unsupported" for data in no accepted format,
    "corrupt" for an accepted format's signature with an unreadable header.
    """
    if len(data) > limits.max_bytes:
        raise PermanentError(
            "too_large", f"{len(data)} bytes is over the limit of {limits.max_bytes}"
        )
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        if claimed := _format_by_signature(data):
            raise PermanentError("corrupt", f"unreadable {claimed} header") from exc
        raise PermanentError("unsupported", "not an image in an accepted format") from exc
    except Exception as exc:  # the type varies with the plugin that failed
        raise _classified("unreadable header", exc) from exc
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise PermanentError(
            "too_large", f"{width}x{height} pixels is over the limit of {limits.max_pixels}"
        )
    return image


def pillow_bytes_per_pixel(mode: str) -> int:
    """The bytes Pillow keeps per pixel of an image in `mode` once decoded."""
    if mode in ("1", "L", "P"):  # a 1-bit image is kept a byte per pixel
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4  # 32-bit modes, and every mode of several bands (RGB is padded to four bytes)


def jpeg_coefficient_bytes(image: Image.Image) -> int:
    """The memory libjpeg holds for a progressive JPEG's DCT coefficients while decoding it,
    whatever scale it decodes to: two bytes per coefficient of the full-size image. 0 for a
    sequential JPEG (decoded a few rows at a time) and for other formats."""
    if image_format(image) != "JPEG" or not image.info.get("progressive"):
        return 0
    # (component id, horizontal sampling, vertical sampling, table) per component.
    max_h = max(h for _, h, _, _ in image.layer)
    max_v = max(v for _, _, v, _ in image.layer)
    mcus = math.ceil(image.width / (8 * max_h)) * math.ceil(image.height / (8 * max_v))
    blocks_per_mcu = sum(h * v for _, h, v, _ in image.layer)
    return mcus * blocks_per_mcu * 64 * 2


def tiff_block_bytes(image: Image.Image) -> int:
    """The buffer libtiff decodes a TIFF's strips or tiles into, one at a time: as large as
    the whole image when it is stored as a single strip. 0 for other formats."""
    if image.format != "TIFF":
        return 0
    tags = image.tag_v2
    if _TILE_WIDTH in tags:
        width, rows = tags[_TILE_WIDTH], tags[_TILE_LENGTH]
    else:
        width, rows = image.width, min(tags.get(_ROWS_PER_STRIP, image.height), image.height)
    if tags.get(_PHOTOMETRIC) == _YCBCR:
        bits_per_pixel = 32  # libtiff decodes YCbCr to RGBA
    else:
        bits = tags.get(_BITS_PER_SAMPLE, 1)
        bits_per_pixel = sum(bits) if isinstance(bits, tuple) else bits * tags.get(_SAMPLES, 1)
    return math.ceil(width * bits_per_pixel / 8) * rows


def image_format(image: Image.Image) -> str:
    """The format the image is decoded as: a multi-picture JPEG (MPO) is a JPEG."""
    return "JPEG" if image.format == "MPO" else image.format


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag, 1 when there is none; unreadable EXIF data is corrupt."""
    # A PNG's EXIF may follow its pixels, so reading it can decode the whole image.
    with classify_decode_errors("cannot read the EXIF data"):
        return image.getexif().get(EXIF_ORIENTATION, 1)


@contextmanager
def classify_decode_errors(detail: str) -> Iterator[None]:
    """Turns what Pillow's decoders raise on bad data, of many types, into PermanentError
    "corrupt", or TransientError when memory ran out; a PermanentError passes unchanged."""
    try:
        yield
    except PermanentError:
        raise
    except Exception as exc:
        raise _classified(detail, exc) from exc


def _classified(detail: str, exc: Exception) -> PermanentError | TransientError:
    # Memory may be free on another attempt; any other failure is the data's.
    if isinstance(exc, MemoryError):
        return TransientError(f"out of memory: {detail}")
    return PermanentError("corrupt", f"{detail}: {exc}")


def _format_by_signature(data: bytes) -> str | None:
    """The accepted format whose signature (magic bytes) `data` starts with, if any."""
    prefix = data[:16]
    for format in ACCEPTED_FORMATS:
        accept = Image.OPEN[format][1]
        if accept is not None and accept(prefix):
            return format
    return None
