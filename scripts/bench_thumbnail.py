"""Times make_thumbnail against the old Lambda's sharp pipeline on the same photos, and compares.

Both sides do the same job, in memory, one image at a time: fit a 400 px box, JPEG quality 80.
sharp runs in one long-lived node process (scripts/sharp/thumbnail.js --serve) that times itself,
so node start-up and the pipe are not counted. The two sides are timed interleaved, photo by
photo: after one untimed run of each, every repetition times sharp and ours back to back, sharp
first on even repetitions and ours first on odd ones, so load that drifts during the run weighs
on both alike; both run on one CPU (--cpu, by default the idlest when the run starts), so that
a busy process elsewhere on the machine competes with both alike too. Our decoding alone is
timed in the same rounds, next to ours. Per photo: the median time of each side over --repeat
rounds, their ratio (ours over sharp), the floor (our decoding alone over sharp's whole
thumbnail: what no work after decoding can go below), whether the output sizes are equal, and
the PSNR of our thumbnail against sharp's. Per format (JPEG, PNG, WebP): the median of its
photos' ratios. The last line sums it up:

    jpeg12mp_ms        median over the 12 MP JPEGs of our median time (sharp_... likewise)
    jpeg_ratio         the median of the JPEG photos' ratios (each ours over sharp, of medians)
    mixed_ratio        the median of every photo's ratio
    worst_jpeg_ratio   the highest JPEG photo's ratio
    png_ratio / webp_ratio
                       the median of the PNG (WebP) photos' ratios
    dims_equal         photos whose thumbnail size equals sharp's / photos
    psnr_min_db        the lowest PSNR of ours against sharp's
    function_p50_ms / function_p95_ms
                       latency of the whole thumbnail function on the local stack, per photo:
                       CloudEvent in, download from the S3 server, resize, upload, database
                       Lambda, status write, reply (every photo x --repeat, sequentially);
                       left out with --no-function

Before 2026-12-06 sharp's runs were all timed before all of ours, and jpeg_ratio and mixed_ratio
were total time over total time, which the slow progressive JPEG dominated.

Run with `make bench-thumbnail ARGS='--repeat 21'`; `--photos jpeg-12mp-a webp-8mp` for a subset.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageDraw

from devstack.make_test_model_pack import build_pack
from devstack.processes import usage_with_children
from devstack.stack import LocalStack, StackConfig
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.images import open_image
from functions.common.pipeline import PIPELINE
from functions.thumbnail import imaging
from functions.thumbnail.imaging import decode_scaled, make_thumbnail
from functions.thumbnail.settings import ThumbnailSettings
from scripts.bench_results import write_result
from scripts.sharp_dimensions import SHARP_DIR

STAGE = "thumbnail"
THUMBNAIL_CREATED = PIPELINE[STAGE].created

SETTINGS = ThumbnailSettings(max_width=400, max_height=400, quality=80)


@dataclass(frozen=True)
class Photo:
    name: str
    kind: str  # how the results are grouped: "jpeg12mp", "jpeg", "png", "webp"
    data: bytes
    size: tuple[int, int]


@dataclass(frozen=True)
class Result:
    photo: Photo
    ours_ms: tuple[float, ...]  # one per repetition, paired with sharp_ms by index
    sharp_ms: tuple[float, ...]
    dims_equal: bool
    psnr_db: float
    decode_ms: tuple[float, ...] = ()  # our decoding alone, timed along with the pair

    @property
    def floor(self) -> float:
        """Our decoding alone over sharp's whole thumbnail: the least our ratio could be."""
        return statistics.median(self.decode_ms) / self.sharp_median if self.decode_ms else math.nan

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours_ms)

    @property
    def sharp_median(self) -> float:
        return statistics.median(self.sharp_ms)

    @property
    def ratio(self) -> float:
        """Ours over sharp, of the medians of the interleaved runs."""
        return self.ours_median / self.sharp_median

    @property
    def format(self) -> str:
        return "jpeg" if self.photo.kind.startswith("jpeg") else self.photo.kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds per photo")
    parser.add_argument("--out-dir", type=Path, help="keep the photos and both thumbnails here")
    parser.add_argument("--photos", nargs="+", metavar="NAME", help="only these photos")
    parser.add_argument(
        "--no-function", action="store_true", help="skip the whole function on the local stack"
    )
    parser.add_argument(
        "--cpu", type=int, help="the CPU both sides are timed on (default: the idlest); -1: any"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        out_dir = args.out_dir or Path(scratch)
        for folder in ("photos", "sharp", "ours"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        print("generating photos ...", flush=True)
        photos = [p for p in photo_set() if not args.photos or p.name in args.photos]
        cpu = _idlest_cpu() if args.cpu is None else args.cpu
        print(f"timing on CPU {cpu} ...", flush=True)
        results = compare(photos, out_dir, args.repeat, cpu)
        function = FunctionTimes([], math.nan)
        if not args.no_function:
            print(f"whole function on the local stack: {len(photos)} photos x {args.repeat} ...")
            function = time_function(photos, Path(scratch), args.repeat)
    print_table(results)
    if function.ms:
        print(
            f"whole function: p50 {_percentile(function.ms, 50):.1f} ms, "
            f"p95 {_percentile(function.ms, 95):.1f} ms over {len(function.ms)} requests, "
            f"{function.cpu_s_per_photo:.3f} CPU-s per photo"
        )
        saved = write_result("thumbnail", {"cpu_s_per_photo": function.cpu_s_per_photo})
        print(f"CPU-seconds per photo for make capacity: {saved}")
    print(summary_line(results, function))


def photo_set() -> list[Photo]:
    rng = np.random.default_rng(2024)
    return [
        _jpeg("jpeg-12mp-a", "jpeg12mp", scenery(rng, 4032, 3024), quality=92),
        _jpeg("jpeg-12mp-b", "jpeg12mp", scenery(rng, 4000, 3000), quality=90),
        _jpeg("jpeg-12mp-rot6", "jpeg12mp", scenery(rng, 4032, 3024), quality=92, orientation=6),
        _jpeg("jpeg-12mp-rot8", "jpeg12mp", scenery(rng, 4032, 3024), quality=88, orientation=8),
        _jpeg("jpeg-12mp-prog", "jpeg12mp", scenery(rng, 4032, 3024), quality=90, progressive=True),
        _jpeg("jpeg-24mp", "jpeg", scenery(rng, 6000, 4000), quality=90),
        _jpeg("jpeg-1080p", "jpeg", scenery(rng, 1920, 1080), quality=85),
        _encoded("png-alpha", "png", _with_alpha(scenery(rng, 2000, 1500)), "PNG"),
        _encoded("webp-8mp", "webp", scenery(rng, 3264, 2448), "WEBP", quality=85),
    ]


def scenery(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Photograph-like content: soft colour blobs over a sky-to-ground gradient, shapes, grain."""
    blobs = rng.integers(0, 256, (height // 200 + 2, width // 200 + 2, 3), dtype=np.uint8)
    soft = np.asarray(Image.fromarray(blobs).resize((width, height), Image.Resampling.BICUBIC))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    gradient = (1 - ramp) * np.array([110, 160, 230]) + ramp * np.array([70, 110, 40])
    pixels = 0.5 * soft + 0.5 * gradient + rng.normal(0, 11, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(width // 100, width // 8))
        colour = tuple(int(channel) for channel in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - radius, y - radius // 2, x + radius, y + radius // 2), fill=colour)
    return image


def _with_alpha(image: Image.Image) -> Image.Image:
    """A vignette of transparency: opaque in the middle, clear at the edges."""
    width, height = image.size
    mask = Image.radial_gradient("L").resize((width, height))
    image.putalpha(Image.eval(mask, lambda value: max(0, 255 - 2 * value)))
    return image


def _jpeg(
    name: str, kind: str, image: Image.Image, *, orientation: int = 1, **params: object
) -> Photo:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encoded(name, kind, image, "JPEG", exif=exif.tobytes(), **params)


def _encoded(name: str, kind: str, image: Image.Image, format: str, **params: object) -> Photo:
    output = io.BytesIO()
    image.save(output, format, **params)
    return Photo(name, kind, output.getvalue(), image.size)


def compare(photos: list[Photo], out_dir: Path, repeat: int, cpu: int = -1) -> list[Result]:
    """Times sharp and ours interleaved, photo by photo, and compares their thumbnails.

    Both sides run on `cpu` (and sharp's node process with all its threads): they never run at
    once, and whatever else runs on the machine then competes with both alike, where on
    different CPUs one side could share its CPU with a busy process and the other not.
    """
    results = []
    with _on_cpu(cpu), SharpServer(out_dir / "sharp") as sharp:
        for photo in photos:
            path = out_dir / "photos" / f"{photo.name}.{_extension(photo)}"
            path.write_bytes(photo.data)
            print(f"{photo.name}: {repeat} pairs ...", flush=True)
            made: list[bytes] = []
            timings = interleaved(
                repeat,
                {
                    "sharp": functools.partial(sharp.thumbnail, path),
                    "ours": functools.partial(_time_ours, photo.data, made),
                    "decode": functools.partial(_time_decoding, photo.data),
                },
            )
            (out_dir / "ours" / f"{path.stem}.jpg").write_bytes(made[-1])
            theirs = (out_dir / "sharp" / f"{path.stem}.jpg").read_bytes()
            dims_equal, psnr_db = similarity(made[-1], theirs)
            ours_ms, sharp_ms, decode_ms = (
                tuple(timings[side]) for side in ("ours", "sharp", "decode")
            )
            results.append(Result(photo, ours_ms, sharp_ms, dims_equal, psnr_db, decode_ms))
    return results


def _idlest_cpu(seconds: float = 1.0) -> int:
    """The CPU this process may run on that was idle the most over the next `seconds`."""

    def idle() -> dict[int, int]:
        # /proc/stat: "cpuN user nice system idle iowait ..." in clock ticks since boot.
        with open("/proc/stat") as stat:
            rows = [line.split() for line in stat if line.startswith("cpu") and line[3].isdigit()]
        return {int(row[0][3:]): int(row[4]) + int(row[5]) for row in rows}

    before = idle()
    time.sleep(seconds)
    after = idle()
    allowed = os.sched_getaffinity(0)
    return max(allowed, key=lambda cpu: after.get(cpu, 0) - before.get(cpu, 0))


@contextlib.contextmanager
def _on_cpu(cpu: int) -> Iterator[None]:
    """This process, and the processes it starts meanwhile, on `cpu` only (-1: unchanged)."""
    if cpu < 0:
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def interleaved(repeat: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Milliseconds of each side (each returns its own), `repeat` rounds of them run back to
    back, after one untimed run of each; in the given order in even rounds, reversed in odd."""
    for run in sides.values():
        run()
    timings: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for index in range(repeat):
        for name in order if index % 2 == 0 else reversed(order):
            timings[name].append(sides[name]())
    return timings


class SharpServer:
    """The sharp pipeline in one warm node process: thumbnail(path) makes one, timed by node."""

    def __init__(self, out_dir: Path) -> None:
        self._command = ["node", "thumbnail.js", "--serve", "--out-dir", str(out_dir)]

    def __enter__(self) -> SharpServer:
        self._process = subprocess.Popen(
            self._command, cwd=SHARP_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)

    def thumbnail(self, path: Path) -> float:
        """The milliseconds sharp took; its thumbnail is written to the out_dir."""
        self._process.stdin.write(f"{path}\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the sharp server ended (exit status {self._process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"sharp: {path}: {answer['error']}")
        return answer["ms"][0]


def _time_decoding(data: bytes) -> float:
    """Milliseconds make_thumbnail spends opening and decoding `data` (at a reduced scale
    where it decodes at one), without resampling, converting or encoding."""
    started = time.perf_counter()
    with open_image(data, SETTINGS.limits) as image:
        decode_scaled(image, data, (SETTINGS.max_width, SETTINGS.max_height))
    return (time.perf_counter() - started) * 1000


def _time_ours(data: bytes, outputs: list[bytes]) -> float:
    started = time.perf_counter()
    thumbnail = make_thumbnail(data, SETTINGS)
    elapsed = (time.perf_counter() - started) * 1000
    outputs[:] = [thumbnail.data]
    return elapsed


@dataclass(frozen=True)
class FunctionTimes:
    ms: list[float]  # per request
    cpu_s_per_photo: float  # the function's processes' CPU time over the requests


def time_function(photos: list[Photo], scratch: Path, repeat: int) -> FunctionTimes:
    """Milliseconds per request to the thumbnail function, with the object in the S3 server,
    and the CPU-seconds its processes spent per request."""
    build_pack(scratch / "models" / "buffalo_l")  # the stack starts embed too
    config = StackConfig(model_root=scratch / "models", workdir=scratch / "stack")
    timings = []
    with LocalStack(config) as stack, requests.Session() as http:
        cpu_before = usage_with_children(stack.pids()[STAGE]).cpu_s
        for photo in photos:
            key = f"bench/photos/{photo.name}.{_extension(photo)}"
            for _ in range(repeat):
                # A new version each time: a repeated one is answered from its first reply.
                stored = stack.s3().put_object(Bucket=config.bucket, Key=key, Body=photo.data)
                ref = PhotoRef(
                    config.bucket, key, stored["VersionId"], "bench", size=len(photo.data)
                )
                headers, body = binary_http(
                    new_event(OBJECT_CREATED, "bench", ref, photo_data(ref))
                )
                started = time.perf_counter()
                response = http.post(stack.urls["thumbnail"], data=body, headers=headers)
                timings.append((time.perf_counter() - started) * 1000)
                if response.headers.get("ce-type") != THUMBNAIL_CREATED:
                    raise RuntimeError(f"{key}: {response.status_code} {response.text[:200]}")
        cpu_s = usage_with_children(stack.pids()[STAGE]).cpu_s - cpu_before
    return FunctionTimes(timings, cpu_s / len(timings))


def _percentile(values: list[float], percent: int) -> float:
    return float(np.percentile(values, percent))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two 8-bit images of one shape."""
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if error == 0 else float(10 * np.log10(255**2 / error))


def similarity(ours: bytes, theirs: bytes) -> tuple[bool, float]:
    """Whether the sizes are equal, and the PSNR in dB between the two (nan if not)."""
    a = np.asarray(Image.open(io.BytesIO(ours)).convert("RGB"))
    b = np.asarray(Image.open(io.BytesIO(theirs)).convert("RGB"))
    if a.shape != b.shape:
        return False, math.nan
    return True, psnr(a, b)


def print_table(results: list[Result]) -> None:
    header = f"{'photo':<20} {'input':>11} {'ours ms':>8} {'sharp ms':>9} {'ratio':>6}"
    print(f"{header} {'decode ms':>10} {'floor':>6} {'dims':>5} {'PSNR dB':>8}")
    for r in results:
        size = "x".join(map(str, r.photo.size))
        decode_ms = statistics.median(r.decode_ms) if r.decode_ms else math.nan
        print(
            f"{r.photo.name:<20} {size:>11} {r.ours_median:>8.1f} {r.sharp_median:>9.1f} "
            f"{r.ratio:>6.2f} {decode_ms:>10.1f} {r.floor:>6.2f} "
            f"{'yes' if r.dims_equal else 'NO':>5} {r.psnr_db:>8.1f}"
        )
    libvips = ".".join(str(imaging.pyvips.version(part)) for part in range(3))
    print(f"our WebP decoding: libvips {libvips} (pyvips {imaging.pyvips.__version__}), scaled")
    print(f"{'format':<8} {'photos':>6} {'ratio':>6} {'worst':>6}")
    for format, ratios in format_ratios(results).items():
        print(f"{format:<8} {len(ratios):>6} {statistics.median(ratios):>6.2f} {max(ratios):>6.2f}")


def format_ratios(results: list[Result]) -> dict[str, list[float]]:
    """Each format's photos' ratios, in the order the formats first appear."""
    ratios: dict[str, list[float]] = {}
    for r in results:
        ratios.setdefault(r.format, []).append(r.ratio)
    return ratios


def summary_line(results: list[Result], function: FunctionTimes) -> str:
    twelve = [r for r in results if r.photo.kind == "jpeg12mp"]
    by_format = format_ratios(results)
    fields = {
        "jpeg12mp_ms": _median(r.ours_median for r in twelve),
        "sharp_jpeg12mp_ms": _median(r.sharp_median for r in twelve),
        "jpeg_ratio": _median(by_format.get("jpeg", [])),
        "mixed_ratio": _median(r.ratio for r in results),
        "worst_jpeg_ratio": max(by_format.get("jpeg", [math.nan])),
        "png_ratio": _median(by_format.get("png", [])),
        "webp_ratio": _median(by_format.get("webp", [])),
    }
    line = " ".join(
        f"{key}={value:.1f}" if key.endswith("_ms") else f"{key}={value:.2f}"
        for key, value in fields.items()
    )
    line += (
        f" dims_equal={sum(r.dims_equal for r in results)}/{len(results)}"
        f" psnr_min_db={min(r.psnr_db for r in results):.1f}"
    )
    if function.ms:
        line += (
            f" function_p50_ms={_percentile(function.ms, 50):.1f}"
            f" function_p95_ms={_percentile(function.ms, 95):.1f}"
            f" function_cpu_s={function.cpu_s_per_photo:.3f}"
        )
    return f"bench thumbnail: {line}"


def _median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def _extension(photo: Photo) -> str:
    return {"png": "png", "webp": "webp"}.get(photo.kind, "jpg")


if __name__ == "__main__":
    main()
