"""Uploaded photo bytes to the BGR array that `cv2.imread` gives the production batch job."""

from __future__ import annotations

import io

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


def decode_photo(data: bytes, settings: EmbedSettings) -> np.ndarray:
    """BGR uint8 [height, width, 3] in displayed orientation; alpha is dropped, not composited."""
    if len(data) > settings.max_input_bytes:
        raise PermanentError(
            "too_large", f"{len(data)} bytes, more than the {settings.max_input_bytes} allowed"
        )
    if _read_header(data, settings) in _CV2_FORMATS:
        return _decode_with_cv2(data)
    return _decode_with_pillow(data)


def _read_header(data: bytes, settings: EmbedSettings) -> str:
    """The image's format, once its size (read without decoding) is within the limits."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image_format = image.format
    except Image.DecompressionBombError as exc:
        raise PermanentError("too_large", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise PermanentError("unsupported", "not an image format that can be decoded") from exc
    except _PILLOW_ERRORS as exc:
        raise PermanentError("corrupt", f"unreadable image header: {exc}") from exc
    if width * height > settings.max_input_pixels:
        raise PermanentError(
            "too_large",
            f"{width}×{height} pixels, more than the {settings.max_input_pixels} allowed",
        )
    return image_format


def _decode_with_cv2(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
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
