"""Uploaded photo bytes to the BGR array that `cv2.imread` gives the production batch job,
optionally decoded smaller (JPEG shrink-on-load) when the photo is far larger than needed."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from functions.common.config import EmbedSettings
from functions.common.errors import PermanentError

pillow_heif.register_heif_opener()

# cv2.imdecode decodes these exactly as cv2.imread does, EXIF orientation included; the rest
# (HEIC, AVIF, GIF, ...) go through Pillow.
_CV2_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF", "BMP"})
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError)
# libjpeg's DCT scaling: the decoder itself produces 1/2, 1/4 or 1/8 of the pixels.
_JPEG_REDUCTIONS = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
}
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class PhotoHeader:
    format: str
    width: int  # a JPEG's as displayed, after EXIF orientation; others' as stored
    height: int


@dataclass(frozen=True)
class DecodedPhoto:
    """BGR uint8 [height, width, 3] in displayed orientation, `reduction` times smaller than
    the photo (1 unless shrunk on load); `width` × `height` is the photo's displayed size."""

    image: np.ndarray
    width: int
    height: int
    reduction: int = 1


def decode_photo(data: bytes, settings: EmbedSettings) -> DecodedPhoto:
    """Alpha is dropped, not composited, as cv2.imread drops it."""
    if len(data) > settings.max_input_bytes:
        raise PermanentError(
            "too_large", f"{len(data)} bytes, more than the {settings.max_input_bytes} allowed"
        )
    header = read_header(data, settings)
    if header.format not in _CV2_FORMATS:
        return _whole(_decode_with_pillow(data))
    reduction = jpeg_reduction(header, settings) if header.format == "JPEG" else 1
    if reduction == 1:
        return _whole(_decode_with_cv2(data, cv2.IMREAD_COLOR))
    image = _decode_with_cv2(data, _JPEG_REDUCTIONS[reduction])
    return DecodedPhoto(image, header.width, header.height, reduction)


def jpeg_reduction(header: PhotoHeader, settings: EmbedSettings) -> int:
    """The largest libjpeg reduction that keeps the long side at least `decode_min_side`."""
    if not settings.decode_shrink:
        return 1
    long_side = max(header.width, header.height)
    for reduction in _JPEG_REDUCTIONS:
        if math.ceil(long_side / reduction) >= settings.decode_min_side:
            return reduction
    return 1


def read_header(data: bytes, settings: EmbedSettings) -> PhotoHeader:
    """The image's format and displayed size, read without decoding and checked against the
    limits."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image.size, settings)
            width, height = image.size
            # Only a JPEG may be shrunk, and only its displayed size is needed then.
            if image.format == "JPEG" and _transposed(image):
                width, height = height, width
            return PhotoHeader(image.format, width, height)
    except Image.DecompressionBombError as exc:
        raise PermanentError("too_large", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise PermanentError("unsupported", "not an image format that can be decoded") from exc
    except _PILLOW_ERRORS as exc:
        raise PermanentError("corrupt", f"unreadable image header: {exc}") from exc


def _check_pixels(size: tuple[int, int], settings: EmbedSettings) -> None:
    width, height = size
    if width * height > settings.max_input_pixels:
        raise PermanentError(
            "too_large",
            f"{width}×{height} pixels, more than the {settings.max_input_pixels} allowed",
        )


def _transposed(image: Image.Image) -> bool:
    return image.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING_ORIENTATIONS


def _whole(image: np.ndarray) -> DecodedPhoto:
    return DecodedPhoto(image, image.shape[1], image.shape[0])


def _decode_with_cv2(data: bytes, flag: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise PermanentError("corrupt", "the image data cannot be decoded")
    return image


def _decode_with_pillow(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except _PILLOW_ERRORS as exc:
        raise PermanentError("corrupt", f"the image data cannot be decoded: {exc}") from exc
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
