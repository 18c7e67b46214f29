"""Decoding within a memory budget: each stage's estimate of a photo's peak memory, read from its
header, is at least what decoding it takes (the peak resident memory it adds to a process), and
the thumbnail stage capped like a pod at its memory limit makes thumbnails of the worst photos,
several at once, without running out of memory: each is made, or fails for good as too_large."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

from devstack import photos
from functions.common.config import InputLimits
from functions.common.memory_budget import MIB
from functions.embed.decode import decode_peak_bytes
from functions.embed.settings import EmbedSettings
from functions.thumbnail.imaging import thumbnail_peak_bytes
from functions.thumbnail.settings import ThumbnailSettings

ROOT = Path(__file__).resolve().parents[1]

PHOTOS = {
    # The photo: 10000x10000 16-bit greyscale in 216 KB.
    "grey16_png_100mp": lambda: photos.large_png(
        10_000, 10_000, bit_depth=16, colour_type=0, pixel=b"\x80\x00"
    ),
    "grey16_tiff_100mp": lambda: photos.large_tiff(
        10_000, 10_000, photometric=1, samples=1, bits=16
    ),
    "rgba16_png_100mp": lambda: photos.large_png(
        10_000, 10_000, bit_depth=16, colour_type=6, pixel=b"\x80\x00" * 4
    ),
    "rgba16_png_24mp": lambda: photos.large_png(
        6000, 4000, bit_depth=16, colour_type=6, pixel=b"\x80\x00" * 4
    ),
    "cmyk_tiff_100mp": lambda: photos.large_tiff(10_000, 10_000, photometric=5, samples=4),
    "cmyk_tiff_24mp": lambda: photos.large_tiff(6000, 4000, photometric=5, samples=4),
    "cmyk_jpeg_24mp": lambda: photos.encode(
        Image.new("CMYK", (6000, 4000), (0, 255, 255, 0)), "JPEG", quality=90
    ),
    # Small files whose headers claim many pixels, under MAX_INPUT_PIXELS.
    "rgb_png_64mp": lambda: photos.large_png(
        8000, 8000, bit_depth=8, colour_type=2, pixel=b"\x5a\x8c\xc8"
    ),
    "palette_gif_24mp": lambda: photos.encode(Image.new("P", (6000, 4000)), "GIF"),
}


@cache
def photo(name: str) -> bytes:
    return PHOTOS[name]()


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        (folder / name).write_bytes(photo(name))
    return {name: folder / name for name in PHOTOS}


# Decodes each photo in turn with one stage, as its function does, and prints the most resident
# memory each added to the process (Pillow's and OpenCV's buffers are not Python objects).
MEASURE = """
import ctypes, io, json, sys
from PIL import Image
from functions.embed.settings import EmbedSettings
from functions.thumbnail.settings import ThumbnailSettings
from functions.embed.decode import decode_photo
from functions.thumbnail.imaging import make_thumbnail

STAGES = {
    "thumbnail": lambda data: make_thumbnail(data, ThumbnailSettings()),
    "embed": lambda data: decode_photo(data, EmbedSettings()),
}

def resident(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field))

small = io.BytesIO()
Image.new("RGB", (300, 200)).save(small, "JPEG")
for run in STAGES.values():
    run(small.getvalue())  # the codecs' one-off set-up
peaks = []
for stage, path in zip(sys.argv[1::2], sys.argv[2::2]):
    data = open(path, "rb").read()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the last photo freed is not reused unseen
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak is reset to the present
    before = resident("VmRSS")
    STAGES[stage](data)
    peaks.append(resident("VmHWM") - before)
print(json.dumps(peaks))
"""

ESTIMATES = {
    "thumbnail": lambda data: thumbnail_peak_bytes(data, ThumbnailSettings()),
    "embed": lambda data: decode_peak_bytes(data, EmbedSettings()),
}
MEASURED = {
    "thumbnail": [
        "grey16_png_100mp",
        "rgba16_png_24mp",
        "cmyk_tiff_24mp",
        "cmyk_jpeg_24mp",
        "rgb_png_64mp",
        "palette_gif_24mp",
    ],
    "embed": ["grey16_png_100mp", "cmyk_tiff_24mp", "cmyk_jpeg_24mp", "palette_gif_24mp"],
}
MEASURED_CASES = [(stage, name) for stage, names in MEASURED.items() for name in names]


@pytest.fixture(scope="module")
def measured_peaks(photo_files) -> dict[tuple[str, str], int]:
    arguments = [str(part) for stage, name in MEASURED_CASES for part in (stage, photo_files[name])]
    ended = subprocess.run(
        [sys.executable, "-c", MEASURE, *arguments],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    return dict(zip(MEASURED_CASES, json.loads(ended.stdout), strict=True))


@pytest.mark.parametrize(("stage", "name"), MEASURED_CASES)
def test_the_estimate_is_at_least_the_memory_decoding_takes(measured_peaks, stage, name):
    assert ESTIMATES[stage](photo(name)) >= measured_peaks[stage, name]


def test_a_16_bit_photo_is_made_8_bit_without_32_bit_copies(measured_peaks):
    # 200 MB of 16-bit pixels and 100 MB of 8-bit ones; not 400 MB of 32 bits, twice.
    assert measured_peaks["thumbnail", "grey16_png_100mp"] < 320 * MIB


# The thumbnail service, with the default budget, in a process capped at the address space it
# uses once its threads are started, plus HEADROOM. It makes the thumbnails of the photos named
# in its arguments, all at once, and prints how each ended.
UNDER_MEMORY_CAP = """
import io, json, resource, sys, threading
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from functions.thumbnail.settings import ThumbnailSettings
from functions.common.errors import PermanentError
from functions.common.events import PhotoRef
from functions.thumbnail.service import ThumbnailService

class Bucket:
    def __init__(self, objects):
        self.objects = objects
    def download(self, bucket, key, version_id, max_bytes):
        return self.objects[key]
    def upload(self, bucket, key, data, content_type):
        pass

class Database:
    def invoke(self, payload):
        pass

headroom, paths = int(sys.argv[1]), sys.argv[2:]
objects = {path: open(path, "rb").read() for path in paths}
small = io.BytesIO()
Image.new("RGB", (300, 200)).save(small, "JPEG")
objects["small.jpg"] = small.getvalue()
service = ThumbnailService(ThumbnailSettings(), Bucket(objects), Database())

def outcome(key):
    try:
        service.process(PhotoRef("photos", key, None, "ann"))
        return "made"
    except PermanentError as error:
        return error.reason
    except BaseException as error:
        return type(error).__name__

with ThreadPoolExecutor(len(paths)) as pool:
    # Every thread started (the barrier), its stack and malloc arena in place, before the cap.
    started = threading.Barrier(len(paths))
    list(pool.map(lambda key: (started.wait(), outcome(key)), ["small.jpg"] * len(paths)))
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + headroom, used + headroom))
    print(json.dumps(list(pool.map(outcome, paths))))
"""
# A worker's share of the default budget, and what the estimates leave out: glibc's free lists,
# the originals, the encoded thumbnails (the peak measured is 30-40 MiB over the share).
HEADROOM = InputLimits().process_memory_budget_bytes + 128 * MIB


def test_the_worst_photos_at_once_are_made_or_too_large_never_out_of_memory(photo_files):
    expected = {
        "grey16_png_100mp": "made",
        "grey16_tiff_100mp": "made",
        "rgba16_png_100mp": "too_large",
        "cmyk_tiff_100mp": "too_large",
        "cmyk_jpeg_24mp": "made",
        "rgb_png_64mp": "made",
        "rgba16_png_24mp": "made",
        "palette_gif_24mp": "made",
    }
    paths = [str(photo_files[name]) for name in expected]

    ended = subprocess.run(
        [sys.executable, "-c", UNDER_MEMORY_CAP, str(HEADROOM), *paths],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        # Two malloc arenas, not one per thread, each taking address space as it is created.
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )

    assert ended.returncode == 0, ended.stderr.decode()[-2000:]
    assert dict(zip(expected, json.loads(ended.stdout), strict=True)) == expected
