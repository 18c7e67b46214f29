"""Both stages open uploads through functions/common/images.py: a photo they cannot use fails
with the same reason in the thumbnail and the embed stage, and running out of memory while
decoding is retried, not failed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

from devstack import photos
from functions.common.config import InputLimits
from functions.common.errors import PermanentError
from functions.common.images import ACCEPTED_FORMATS
from functions.embed.decode import decode_photo
from functions.embed.settings import EmbedSettings
from functions.thumbnail.imaging import make_thumbnail
from functions.thumbnail.settings import ThumbnailSettings

ROOT = Path(__file__).resolve().parents[1]
STAGES: dict[str, Callable[[bytes, InputLimits], object]] = {
    "thumbnail": lambda data, limits: make_thumbnail(data, ThumbnailSettings(limits=limits)),
    "embed": lambda data, limits: decode_photo(data, EmbedSettings(limits=limits)),
}


def truncated(format: str) -> bytes:
    data = photos.encode(photos.scene(300, 200), format)
    return data[: len(data) // 2]


def coded_data_zeroed(format: str) -> bytes:
    """A HEIF or AVIF file with an intact header whose coded picture (the `mdat` box) is zeros:
    Pillow's HEIF plugin fails on it with EOFError, its AVIF plugin with RuntimeError."""
    data = photos.encode(photos.scene(120, 80), format)
    start = data.index(b"mdat") + 4
    return data[:start] + bytes(len(data) - start)


BAD_PHOTOS: dict[str, tuple[Callable[[], bytes], InputLimits, str]] = {
    "empty": (lambda: b"", InputLimits(), "unsupported"),
    "random_bytes": (photos.random_bytes, InputLimits(), "unsupported"),
    "pdf": (lambda: b"%PDF-1.7 not a photo" * 20, InputLimits(), "unsupported"),
    "format_outside_the_accepted_list": (
        lambda: photos.encode(photos.scene(64, 64), "ICO"),
        InputLimits(),
        "unsupported",
    ),
    "jpeg_signature_then_zeros": (lambda: b"\xff\xd8\xff" + bytes(100), InputLimits(), "corrupt"),
    **{
        f"truncated_{format.lower()}": (
            lambda format=format: truncated(format),
            InputLimits(),
            "corrupt",
        )
        for format in ACCEPTED_FORMATS
    },
    "heif_whose_coded_data_is_zeros": (lambda: coded_data_zeroed("HEIF"), InputLimits(), "corrupt"),
    "avif_whose_coded_data_is_zeros": (lambda: coded_data_zeroed("AVIF"), InputLimits(), "corrupt"),
    "over_the_byte_limit": (
        lambda: photos.jpeg(300, 200),
        InputLimits(max_bytes=1000),
        "too_large",
    ),
    "over_the_pixel_limit": (
        lambda: photos.jpeg(300, 200),
        InputLimits(max_pixels=300 * 200 - 1),
        "too_large",
    ),
    "decompression_bomb": (photos.decompression_bomb_png, InputLimits(), "too_large"),
}


def test_both_stages_take_their_input_limits_from_the_same_variables(monkeypatch):
    monkeypatch.setenv("MAX_INPUT_BYTES", "1234")
    monkeypatch.setenv("MAX_INPUT_PIXELS", "5678")

    expected = InputLimits(max_bytes=1234, max_pixels=5678)
    assert ThumbnailSettings.from_env().limits == EmbedSettings.from_env().limits == expected


def failure_reason(stage: str, data: bytes, limits: InputLimits) -> str | None:
    try:
        STAGES[stage](data, limits)
    except PermanentError as error:
        return error.reason
    return None


@pytest.mark.parametrize("name", BAD_PHOTOS)
def test_both_stages_fail_a_bad_photo_with_the_same_reason(name):
    make, limits, reason = BAD_PHOTOS[name]
    data = make()

    reasons = {stage: failure_reason(stage, data, limits) for stage in STAGES}

    assert reasons == {"thumbnail": reason, "embed": reason}


# Runs one stage on the photo read from stdin with its address space capped at what it already
# uses plus HEADROOM, and prints how the stage ended.
UNDER_MEMORY_CAP = """
import resource, sys
from functions.common.config import InputLimits
from functions.embed.settings import EmbedSettings
from functions.thumbnail.settings import ThumbnailSettings
from functions.common.errors import PermanentError, TransientError
from functions.embed.decode import decode_photo
from functions.thumbnail.imaging import make_thumbnail

stage, headroom = sys.argv[1], int(sys.argv[2])
data = sys.stdin.buffer.read()
limits = InputLimits(max_pixels=10_000 * 10_000)
with open("/proc/self/statm") as statm:
    used = int(statm.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + headroom, used + headroom))
try:
    if stage == "thumbnail":
        make_thumbnail(data, ThumbnailSettings(limits=limits))
    else:
        decode_photo(data, EmbedSettings(limits=limits))
    print("processed")
except TransientError:
    print("transient")
except PermanentError as error:
    print(error.reason)
"""
# A 10000x10000 photo takes 100 MB as a palette image, 300 or 400 MB as RGB.
HEADROOM = 200 * 1024 * 1024


@cache
def ten_thousand_square(format: str) -> bytes:
    if format == "PNG":
        return photos.decompression_bomb_png(10_000, 10_000)
    return photos.encode(Image.new("P", (10_000, 10_000)), format)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("format", ["PNG", "GIF"])  # opened by OpenCV and by Pillow in embed
def test_running_out_of_memory_while_decoding_is_transient(stage, format):
    ended = subprocess.run(
        [sys.executable, "-c", UNDER_MEMORY_CAP, stage, str(HEADROOM)],
        input=ten_thousand_square(format),
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )

    assert ended.stdout.decode().strip() == "transient"
