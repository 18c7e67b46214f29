"""Uploaded photo bytes to the BGR array that `cv2.imread` gives the production batch job,
optionally decoded smaller (JPEG shrink-on-load) when the photo is far larger than needed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from functions.common.errors import PermanentError
from functions.common.images import (
    ORIENTATION_TRANSPOSE,
    TRANSPOSING_ORIENTATIONS,
    classify_decode_errors,
    exif_orientation,
    image_format,
    jpeg_coefficient_bytes,
    open_image,
    pillow_bytes_per_pixel,
    tiff_block_bytes,
)
from functions.embed.settings import EmbedSettings

# cv2.imdecode decodes these exactly as cv2.imread does, EXIF orientation included; the rest
# (HEIC, AVIF, GIF, ...) go through Pillow. A multi-picture JPEG (MPO) is a JPEG here, as it is to
# cv2.imread, which decodes its first picture.
_CV2_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF", "BMP"})
# libjpeg's DCT scaling: the decoder itself produces 1/2, 1/4 or 1/8 of the pixels.
_JPEG_REDUCTIONS = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
}
# Pillow-decoded images are converted to BGR this many pixels at a time.
_BAND_PIXELS = 1 << 20
# What the decoders hold per pixel besides the image they return: pillow-heif's and Pillow's AVIF
# decoded frame; OpenCV's BGRA frame of a WebP with alpha. Measured, rounded up.
_DECODER_BYTES_PER_PIXEL = {"HEIF": 4, "AVIF": 6, "WEBP": 4}
# Codec state and row buffers: measured at most 4 MiB.
_FIXED_BYTES = 16 * 1024 * 1024


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
    """Alpha is dropped, not composited, as cv2.imread drops it. PermanentError for unusable
    input, TransientError when memory ran out."""
    with open_image(data, settings.limits) as image:
        if image_format(image) not in _CV2_FORMATS:
            return _whole(_decode_with_pillow(image))
        header = _displayed_header(image)
    reduction = jpeg_reduction(header, settings) if header.format == "JPEG" else 1
    if reduction == 1:
        return _whole(_decode_with_cv2(data, header.format, cv2.IMREAD_COLOR))
    reduced = _decode_with_cv2(data, header.format, _JPEG_REDUCTIONS[reduction])
    return DecodedPhoto(reduced, header.width, header.height, reduction)


def decode_peak_bytes(data: bytes, settings: EmbedSettings) -> int:
    """At least the memory `decode_photo(data, settings)` takes at once, its result included,
    read from the header only; the input limits' PermanentErrors as decode_photo raises them."""
    with open_image(data, settings.limits) as image:
        if image_format(image) not in _CV2_FORMATS:
            return _pillow_peak_bytes(image) + _FIXED_BYTES
        header = _displayed_header(image)
        reduction = jpeg_reduction(header, settings) if header.format == "JPEG" else 1
        bgr = math.ceil(image.width / reduction) * math.ceil(image.height / reduction) * 3
        decoder = jpeg_coefficient_bytes(image) + tiff_block_bytes(image)
        if image.format == "WEBP" and image.mode == "RGBA":
            decoder += image.width * image.height * _DECODER_BYTES_PER_PIXEL["WEBP"]
        # The decoder's buffers are gone by the time OpenCV's Python binding copies the image
        # it decoded into a NumPy array.
        return bgr + max(decoder, bgr) + _FIXED_BYTES


def jpeg_reduction(header: PhotoHeader, settings: EmbedSettings) -> int:
    """The largest libjpeg reduction that keeps the long side at least `decode_min_side`."""
    if not settings.decode_shrink:
        return 1
    long_side = max(header.width, header.height)
    for reduction in _JPEG_REDUCTIONS:
        if math.ceil(long_side / reduction) >= settings.decode_min_side:
            return reduction
    return 1


def _displayed_header(image: Image.Image) -> PhotoHeader:
    source_format = image_format(image)
    width, height = image.size
    # Only a JPEG may be shrunk, and only its displayed size is needed then.
    if source_format == "JPEG" and exif_orientation(image) in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return PhotoHeader(source_format, width, height)


def _whole(image: np.ndarray) -> DecodedPhoto:
    return DecodedPhoto(image, image.shape[1], image.shape[0])


def _decode_with_cv2(data: bytes, source_format: str, flag: int) -> np.ndarray:
    detail = f"cannot decode the {source_format} data"
    with classify_decode_errors(detail):
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        except cv2.error as exc:
            # OpenCV reports running out of memory as its own error, not as MemoryError.
            if exc.code == cv2.Error.StsNoMem:
                raise MemoryError(str(exc)) from exc
            raise
    if image is None:
        raise PermanentError("corrupt", detail)
    return image


def _decode_with_pillow(image: Image.Image) -> np.ndarray:
    with classify_decode_errors(f"cannot decode the {image.format} data"):
        ImageOps.exif_transpose(image, in_place=True)
        return _bgr_in_bands(image)


def _bgr_in_bands(image: Image.Image) -> np.ndarray:
    """The image as BGR, converted a band of rows at a time into the array: converting it whole
    would make an RGB copy, its bytes and an RGB array besides."""
    bgr = np.empty((image.height, image.width, 3), np.uint8)
    rows = max(1, _BAND_PIXELS // image.width)
    for top in range(0, image.height, rows):
        bottom = min(top + rows, image.height)
        band = image.crop((0, top, image.width, bottom)).convert("RGB")
        bgr[top:bottom] = np.asarray(band)[..., ::-1]
    return bgr


def _pillow_peak_bytes(image: Image.Image) -> int:
    """The decoder's frame and the decoded image, a turned copy of it when the EXIF
    orientation turns it, and the BGR array."""
    pixels = image.width * image.height
    decoded = pixels * pillow_bytes_per_pixel(image.mode)
    turned = decoded if exif_orientation(image) in ORIENTATION_TRANSPOSE else 0
    decoder = pixels * _DECODER_BYTES_PER_PIXEL.get(image.format, 0)
    return decoder + decoded + turned + pixels * 3
