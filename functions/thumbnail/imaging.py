"""Thumbnails as the old Lambda's sharp pipeline made them, with Pillow and no I/O (and libvips,
through pyvips, to decode WebP at a reduced size as sharp does).

The Lambda ran `sharp(input).rotate().resize(w, h, {fit: 'inside', withoutEnlargement: true})
.flatten({background}).jpeg({quality})`. This module reproduces its output size exactly, including
the effect of the scaled decoding sharp asks of libjpeg and libwebp, and its look: EXIF orientation
applied, colours converted to sRGB, alpha flattened, Lanczos resampling, baseline 4:2:0 JPEG with
no metadata.
"""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache

# libvips (pyvips-binary's) decodes WebP at a reduced size, as sharp does, which Pillow cannot:
# Pillow's WebP decoding alone takes longer than sharp's whole thumbnail. make bench-thumbnail's
# webp_ratio (ours over sharp's): 1.27-1.31 with Pillow, 0.95-1.13 with libvips and the same
# pixels as sharp's (docs/benchmarks.md). A hard dependency: the function does not start without.
import pyvips
from PIL import Image, ImageCms

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
from functions.thumbnail.settings import ThumbnailSettings

pyvips.cache_set_max(0)  # nothing decoded is kept: the memory budget does not count it
pyvips.concurrency_set(1)  # one thread a photo, as with Pillow (and sharp's default here)

log = logging.getLogger(__name__)

_RESAMPLED_MODES = {"L", "LA", "RGB", "RGBA", "CMYK"}
_WITHOUT_ALPHA = {"LA": "L", "RGBA": "RGB"}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_CACHED_PROFILE_MAX_BYTES = 64 * 1024
# Images are converted to 8 bits this many pixels at a time, into the converted image.
_BAND_PIXELS = 1 << 20
# What Pillow's WebP, HEIF and AVIF decoders hold per pixel besides the decoded image: their own
# decoded frame, and a copy of it in bytes. Measured, rounded up.
_DECODER_BYTES_PER_PIXEL = {"WEBP": 12, "HEIF": 4, "AVIF": 6}
# Codec state, row buffers, the thumbnail itself: measured at most 8 MiB.
_FIXED_BYTES = 16 * 1024 * 1024
# Resampling first averages boxes of pixels, by the largest whole factor that leaves at least
# this many times the output size, then resamples the rest with Lanczos. libvips (sharp) leaves
# twice the output size to its Lanczos; Pillow's Lanczos costs more than libvips', and leaving
# once the size gives thumbnails within 43 dB PSNR of twice, closer than sharp's JPEG coding
# and ours are to each other (39-50 dB on the bench's photos).
_REDUCING_GAP = 1.0


@dataclass(frozen=True)
class Thumbnail:
    """The encoded thumbnail, and the source's size as displayed (after EXIF orientation) and
    format."""

    data: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    source_format: str
    content_type: str = "image/jpeg"

    @property
    def source_content_type(self) -> str:
        return Image.MIME[self.source_format]


def make_thumbnail(data: bytes, settings: ThumbnailSettings) -> Thumbnail:
    """The JPEG thumbnail sharp would have made of `data`; PermanentError for unusable input,
    TransientError when memory ran out."""
    with open_image(data, settings.limits) as image:
        source_format = image_format(image)
        orientation = _stored_orientation(image)
        original_size = _turned(image.size, orientation)
        # sharp resizes before orienting, into the box turned the way the pixels are stored.
        resized = _decode_resized(
            image, data, _turned((settings.max_width, settings.max_height), orientation)
        )
    thumbnail = _to_srgb(resized, settings.background)
    if orientation in ORIENTATION_TRANSPOSE:
        thumbnail = thumbnail.transpose(ORIENTATION_TRANSPOSE[orientation])
    return Thumbnail(
        data=_encode_jpeg(thumbnail, settings.quality),
        width=thumbnail.width,
        height=thumbnail.height,
        original_width=original_size[0],
        original_height=original_size[1],
        source_format=source_format,
    )


def thumbnail_peak_bytes(data: bytes, settings: ThumbnailSettings) -> int:
    """At least the memory `make_thumbnail(data, settings)` takes at once, read from the header
    only; the input limits' PermanentErrors as make_thumbnail raises them."""
    with open_image(data, settings.limits) as image, classify_decode_errors("unreadable header"):
        box = (settings.max_width, settings.max_height)
        width, height = _decoded_size(image, box)
        decoder = jpeg_coefficient_bytes(image) + tiff_block_bytes(image)
        if image.format == "TIFF":
            decoder += len(data)  # libtiff is handed a copy of the file
        if image.format == "JPEG" and image.info.get("progressive"):
            decoder += len(data)  # at most, the scans it is decoded from
        pixels = width * height * _bytes_per_pixel(image)
        return pixels + decoder + _resampling_bytes(box) + _FIXED_BYTES


def thumbnail_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The size of sharp's `resize(max_width, max_height, {fit: 'inside', withoutEnlargement})`."""
    h_shrink, v_shrink = _shrink_factors(width, height, max_width, max_height)
    # libvips sizes its output as round-half-up of size * scale, with scale = 1 / shrink.
    return math.floor(width * (1.0 / h_shrink) + 0.5), math.floor(height * (1.0 / v_shrink) + 0.5)


def _shrink_factors(
    width: int, height: int, max_width: int, max_height: int
) -> tuple[float, float]:
    # sharp's ResolveShrink for fit 'inside': one factor for both axes, never enlarging, and
    # never so large that an axis would shrink below one pixel.
    shrink = max(width / max_width, height / max_height, 1.0)
    return min(shrink, width), min(shrink, height)


def _jpeg_shrink_on_load(width: int, height: int, max_width: int, max_height: int) -> int:
    """The DCT scaling (1/8, 1/4, 1/2 or none) sharp asks libjpeg for, as its denominator."""
    shrink = min(_shrink_factors(width, height, max_width, max_height))
    factor = next((factor for factor in (8, 4, 2) if shrink >= factor), 1)
    # sharp halves it when the shrink is barely over it, to stay clear of libjpeg's rounding.
    if factor > 1 and int(shrink) == factor:
        factor //= 2
    return factor


def _webp_scaled_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The size libwebp decodes to when sharp asks it to scale on load (rounded half to even)."""
    shrink = min(_shrink_factors(width, height, max_width, max_height))
    if shrink <= 1.0:
        return width, height
    scale = 1.0 / shrink
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decoded_size(image: Image.Image, box: tuple[int, int]) -> tuple[int, int]:
    """The size `_shrink_on_load` has the image decoded at: a JPEG's reduced by libjpeg."""
    if image_format(image) != "JPEG":
        return image.size
    # A JPEG's EXIF orientation is in its header (reading a PNG's may decode it).
    turned = _turned(box, _stored_orientation(image))
    scale = _jpeg_scales(*image.size, turned)[1]
    return math.ceil(image.width / scale), math.ceil(image.height / scale)


def _bytes_per_pixel(image: Image.Image) -> int:
    """What stays allocated per decoded pixel until the thumbnail is resampled: the decoded
    image, the decoder's own frame, the 8-bit image and the copy resizing premultiplies."""
    eight_bit = _eight_bit_mode(image)
    held = pillow_bytes_per_pixel(image.mode) + _DECODER_BYTES_PER_PIXEL.get(image.format, 0)
    if eight_bit != image.mode:
        held += pillow_bytes_per_pixel(eight_bit)
    if eight_bit in _WITHOUT_ALPHA:
        held += 4
    return held


def _resampling_bytes(box: tuple[int, int]) -> int:
    """What Lanczos resampling with a reducing gap of at most 2 allocates besides its source: the
    source reduced to under 4 times the output's width and height, an image of the output's width
    and the reduced height, and the output; four bytes a pixel."""
    output = box[0] * box[1]
    return 4 * (16 * output + 4 * output + output)


def _stored_orientation(image: Image.Image) -> int:
    """The EXIF orientation the decoded pixels are still in (1: as displayed)."""
    # Pillow's TIFF plugin (and pillow-heif) orient while decoding and report the oriented size.
    if image.format == "TIFF":
        return 1
    return exif_orientation(image)


def _turned(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in TRANSPOSING_ORIENTATIONS else size


def _decode_resized(image: Image.Image, data: bytes, box: tuple[int, int]) -> Image.Image:
    """Decodes the first frame and resamples it to sharp's output size, in stored orientation."""
    # The full-size pixels are allocated here: running out of memory is classified too.
    with classify_decode_errors(f"cannot decode the {image.format} data"):
        decoded, source, size = decode_scaled(image, data, box)
        eight_bit = _eight_bit(decoded)
        return eight_bit.resize(
            size, Image.Resampling.LANCZOS, box=source, reducing_gap=_REDUCING_GAP
        )


def decode_scaled(
    image: Image.Image, data: bytes, box: tuple[int, int]
) -> tuple[Image.Image, tuple[float, float, float, float], tuple[int, int]]:
    """The first frame decoded, at a reduced size where the format allows; the area of it to
    resample, and the size to give it."""
    source, size = _shrink_on_load(image, box)
    if image.format == "WEBP":
        scaled = _webp_scaled_by_libvips(image, data, box)
        return scaled, (0, 0, *scaled.size), size
    at_an_eighth = image.format == "JPEG" and image.decoderconfig[:1] == (8,)
    if at_an_eighth and image.info.get("progressive") and (lighter := _scans_an_eighth_shows(data)):
        image.fp = io.BytesIO(lighter)  # Pillow's JPEG decoder reads it from the start
    image.load()
    return image, source, size


# A marker: 0xFF, and neither a stuffed zero nor a restart marker (which entropy data holds).
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_SOI, _EOI, _SOS, _SOF2 = 0xD8, 0xD9, 0xDA, 0xC2
# The frame markers of every other coding process (0xC4, 0xC8 and 0xCC are not frames).
_OTHER_SOFS = frozenset({0xC0, 0xC1, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _scans_an_eighth_shows(data: bytes) -> bytes | None:
    """A progressive JPEG without the scans that decoding it at 1/8 scale makes no use of; None
    where the data is not what it expects (it is then decoded as it is).

    At 1/8, libjpeg's inverse DCT of a component sampled at the full resolution (the luma of a
    4:2:0 photo, every component of a 4:4:4 one) reads only its DC coefficient: the scans that
    refine that component's AC coefficients, or code its later bands, change nothing decoded,
    and they are most of a photo's data. Its first AC band is kept all the same: with none of
    its AC coefficients, libjpeg would smooth its DC coefficients. The other components' inverse
    DCTs read some of their AC coefficients: their scans are all kept.
    """
    try:
        return _without_unseen_scans(data)
    except (IndexError, ValueError):
        return None


def _without_unseen_scans(data: bytes) -> bytes | None:
    if data[0] != 0xFF or data[1] != _SOI:
        return None
    kept, position, full_resolution = bytearray(data[:2]), 2, None
    while True:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == _EOI:
            return bytes(kept + data[position : position + 2])
        if marker in _OTHER_SOFS or 0xD0 <= marker <= 0xD8 or marker == 0x01:
            return None
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == _SOF2:
            # (id, sampling) per component; sampling: horizontal factor * 16 + vertical factor.
            components = {data[at]: data[at + 1] for at in range(position + 10, end, 3)}
            most = max(components.values()) >> 4, max(f & 15 for f in components.values())
            full_resolution = {c for c, f in components.items() if (f >> 4, f & 15) == most}
        if marker != _SOS:
            kept += data[position:end]
            position = end
            continue
        if full_resolution is None:
            return None
        count = data[position + 4]
        scanned = {data[position + 5 + 2 * index] for index in range(count)}
        first, refines = data[position + 5 + 2 * count], data[position + 7 + 2 * count] >> 4
        found = _MARKER.search(data, end)
        if found is None:
            return None
        unseen = first > 1 or (first == 1 and refines > 0)
        if not (unseen and scanned <= full_resolution):
            kept += data[position : found.start()]
        position = found.start()


def _webp_scaled_by_libvips(image: Image.Image, data: bytes, box: tuple[int, int]) -> Image.Image:
    """The WebP's first frame decoded by libwebp already scaled, as sharp has it decoded (at
    `_webp_scaled_size`), through libvips; with the info (ICC profile) Pillow read from it."""
    shrink = min(_shrink_factors(*image.size, *box))
    frame = pyvips.Image.webpload_buffer(data, scale=1.0 / shrink, access="sequential")
    mode = "RGBA" if frame.hasalpha() else "RGB"
    pixels = frame.write_to_memory()
    decoded = Image.frombuffer(mode, (frame.width, frame.height), pixels, "raw", mode, 0, 1)
    decoded.info = dict(image.info)
    return decoded


def _shrink_on_load(
    image: Image.Image, box: tuple[int, int]
) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
    """Sets up a scaled decoding; the area to resample, and the size to give it.

    The size is sharp's: it is computed again from the size sharp's decoder scaled to, if it did.
    """
    width, height = image.size
    if image.format == "WEBP":
        # libwebp scales while decoding, which Pillow cannot ask of it: libvips does
        # (`_webp_scaled_by_libvips`), to the size that is then resampled whole.
        return (0, 0, width, height), thumbnail_size(*_webp_scaled_size(width, height, *box), *box)
    if image_format(image) != "JPEG":
        return (0, 0, width, height), thumbnail_size(width, height, *box)
    factor, scale = _jpeg_scales(width, height, box)
    if scale > 1:
        drafted = image.draft("RGB", (width // scale, height // scale))
        # The scale Pillow set up: it answers the area of the original the decoded image covers.
        scale = round(width / drafted[1][2]) if drafted else 1
    # libjpeg decodes ceil(size / factor) pixels; libvips keeps floor(size / factor) of them,
    # which are (size // factor) * factor / scale of those decoded at our scale.
    kept = (width // factor, height // factor)
    return (0, 0, kept[0] * factor / scale, kept[1] * factor / scale), thumbnail_size(*kept, *box)


def _jpeg_scales(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """sharp's shrink-on-load factor, which the thumbnail's size follows from, and the DCT
    scaling we decode at, both as denominators.

    We decode at the smallest scale libjpeg offers (1/8, 1/4, 1/2) that still leaves at least
    the thumbnail's pixels of what sharp keeps, never larger than sharp's: where sharp stays a
    step short of the thumbnail's size (its rule, below) we need not. The entropy decoding costs
    the same at any scale; a smaller one saves in the inverse DCT, the colour conversion and,
    most, in resampling fewer pixels.
    """
    factor = _jpeg_shrink_on_load(width, height, *box)
    kept = (width // factor, height // factor)
    size = thumbnail_size(*kept, *box)
    for scale in (8, 4, 2):
        if scale <= factor:
            break
        decoded = (kept[0] * factor // scale, kept[1] * factor // scale)
        if decoded[0] >= size[0] and decoded[1] >= size[1]:
            return factor, scale
    return factor, factor


def _eight_bit(image: Image.Image) -> Image.Image:
    """The image in a mode Pillow resamples, keeping the colour model its ICC profile expects."""
    mode = _eight_bit_mode(image)
    if mode == image.mode:
        return image
    try:
        return _converted_in_bands(image, mode)
    except ValueError as exc:
        raise PermanentError("unsupported", f"colour mode {image.mode}") from exc


def _eight_bit_mode(image: Image.Image) -> str:
    if image.mode in _RESAMPLED_MODES:
        return image.mode
    if image.mode.startswith("I") or image.mode == "1":
        return "L"
    return "RGBA" if image.has_transparency_data else "RGB"


def _converted_in_bands(image: Image.Image, mode: str) -> Image.Image:
    """`image` converted to `mode` a band of rows at a time: converting it whole would make
    full-size intermediates (a 16-bit image goes through 32 bits a pixel, twice)."""
    converted = Image.new(mode, image.size)
    rows = max(1, _BAND_PIXELS // image.width)
    for top in range(0, image.height, rows):
        bottom = min(top + rows, image.height)
        band = _converted(image.crop((0, top, image.width, bottom)), mode)
        converted.paste(band, (0, top))
    # The info (ICC profile, ...) a whole conversion would have given it.
    converted.info = band.info
    return converted


def _converted(image: Image.Image, mode: str) -> Image.Image:
    if image.mode.startswith("I"):
        # 16-bit greyscale: keep the high byte, as libvips does, rather than clip at 255.
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image.convert(mode)


def _to_srgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB in sRGB, through the embedded ICC profile if any, with alpha flattened on background."""
    if image.mode not in _WITHOUT_ALPHA:
        return _convert_to_srgb(image, image.info.get("icc_profile"))
    rgb = _convert_to_srgb(image.convert(_WITHOUT_ALPHA[image.mode]), image.info.get("icc_profile"))
    flattened = Image.new("RGB", rgb.size, background)
    flattened.paste(rgb, mask=image.getchannel("A"))
    return flattened


def _convert_to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    if icc_profile:
        try:
            return ImageCms.applyTransform(image, _transform_to_srgb(icc_profile, image.mode))
        except (OSError, ImageCms.PyCMSError) as exc:
            # sharp warns about an invalid embedded profile and carries on without it.
            log.warning("ignoring unusable ICC profile: %s", exc)
    # The image is the resampled one, not shared: an RGB one need not be copied.
    return image if image.mode == "RGB" else image.convert("RGB")


def _transform_to_srgb(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    # Building a transform costs about as much as applying it to a thumbnail. Phones embed a
    # handful of small profiles (sRGB, Display P3, ...): keep those, not arbitrary large ones.
    if len(icc_profile) <= _CACHED_PROFILE_MAX_BYTES:
        return _cached_transform_to_srgb(icc_profile, mode)
    return _build_transform_to_srgb(icc_profile, mode)


def _build_transform_to_srgb(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    return ImageCms.buildTransform(
        source, _SRGB, mode, "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
    )


_cached_transform_to_srgb = lru_cache(maxsize=16)(_build_transform_to_srgb)


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    # Conversions carry the source's info (EXIF, ICC profile, comment) along; none of it is kept.
    image.info.clear()
    output = io.BytesIO()
    image.save(output, "JPEG", quality=quality, subsampling="4:2:0", optimize=True)
    return output.getvalue()
