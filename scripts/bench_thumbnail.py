"""Times make_thumbnail against the old Lambda's sharp pipeline on the same photos, and compares.

Both sides do the same job, in memory, one image at a time: fit a 400 px box, JPEG quality 80.
sharp runs in one node process (scripts/sharp/thumbnail.js) that times itself, so node start-up
is not counted. Per photo: the median time of each side over --repeat runs, whether the output
sizes are equal, and the PSNR of our thumbnail against sharp's. The last line sums it up:

    jpeg12mp_ms        median over the 12 MP JPEGs of our median time (sharp_... likewise)
    jpeg_ratio         our total time over sharp's, summed over the JPEG photos' medians
    mixed_ratio        the same over every photo
    dims_equal         photos whose thumbnail size equals sharp's / photos
    psnr_min_db        the lowest PSNR of ours against sharp's
    function_p50_ms / function_p95_ms
                       latency of the whole thumbnail function on the local stack, per photo:
                       CloudEvent in, download from the S3 server, resize, upload, database
                       Lambda, status write, reply (every photo x --repeat, sequentially)

Run with `make bench-thumbnail ARGS='--repeat 9'`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageDraw

from devstack.make_test_model_pack import build_pack
from devstack.stack import LocalStack, StackConfig
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.pipeline import PIPELINE
from functions.thumbnail.imaging import make_thumbnail
from functions.thumbnail.settings import ThumbnailSettings
from scripts.sharp_dimensions import SHARP_DIR

THUMBNAIL_CREATED = PIPELINE["thumbnail"].created

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
    ours_ms: float
    sharp_ms: float
    dims_equal: bool
    psnr_db: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per photo and side")
    parser.add_argument("--out-dir", type=Path, help="keep the photos and both thumbnails here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        out_dir = args.out_dir or Path(scratch)
        for folder in ("photos", "sharp", "ours"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        print("generating photos ...", flush=True)
        photos = photo_set()
        results = compare(photos, out_dir, args.repeat)
        print(f"whole function on the local stack: {len(photos)} photos x {args.repeat} ...")
        function_ms = time_function(photos, Path(scratch), args.repeat)
    print_table(results)
    print(
        f"whole function: p50 {_percentile(function_ms, 50):.1f} ms, "
        f"p95 {_percentile(function_ms, 95):.1f} ms over {len(function_ms)} requests"
    )
    print(summary_line(results, function_ms))


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


def compare(photos: list[Photo], out_dir: Path, repeat: int) -> list[Result]:
    paths = []
    for photo in photos:
        path = out_dir / "photos" / f"{photo.name}.{_extension(photo)}"
        path.write_bytes(photo.data)
        paths.append(path)
    print(f"sharp: {len(photos)} photos x {repeat} ...", flush=True)
    sharp = run_sharp(paths, out_dir / "sharp", repeat)
    print(f"ours: {len(photos)} photos x {repeat} ...", flush=True)
    results = []
    for photo, path in zip(photos, paths, strict=True):
        ours_ms, ours = time_ours(photo.data, repeat)
        (out_dir / "ours" / f"{path.stem}.jpg").write_bytes(ours)
        theirs = (out_dir / "sharp" / f"{path.stem}.jpg").read_bytes()
        dims_equal, psnr_db = similarity(ours, theirs)
        results.append(Result(photo, ours_ms, sharp[str(path)], dims_equal, psnr_db))
    return results


def run_sharp(paths: list[Path], out_dir: Path, repeat: int) -> dict[str, float]:
    """Each photo's median time in sharp; the thumbnails are written to out_dir."""
    command = ["node", "thumbnail.js", "--repeat", str(repeat), "--out-dir", str(out_dir)]
    run = subprocess.run(
        [*command, *map(str, paths)], cwd=SHARP_DIR, capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    return {line["path"]: statistics.median(line["ms"]) for line in lines}


def time_ours(data: bytes, repeat: int) -> tuple[float, bytes]:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        thumbnail = make_thumbnail(data, SETTINGS)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), thumbnail.data


def time_function(photos: list[Photo], scratch: Path, repeat: int) -> list[float]:
    """Milliseconds per request to the thumbnail function, with the object in the S3 server."""
    build_pack(scratch / "models" / "buffalo_l")  # the stack starts embed too
    config = StackConfig(model_root=scratch / "models", workdir=scratch / "stack")
    timings = []
    with LocalStack(config) as stack, requests.Session() as http:
        for photo in photos:
            key = f"bench/photos/{photo.name}.{_extension(photo)}"
            stored = stack.s3().put_object(Bucket=config.bucket, Key=key, Body=photo.data)
            ref = PhotoRef(config.bucket, key, stored["VersionId"], "bench", size=len(photo.data))
            for _ in range(repeat):
                headers, body = binary_http(
                    new_event(OBJECT_CREATED, "bench", ref, photo_data(ref))
                )
                started = time.perf_counter()
                response = http.post(stack.urls["thumbnail"], data=body, headers=headers)
                timings.append((time.perf_counter() - started) * 1000)
                if response.headers.get("ce-type") != THUMBNAIL_CREATED:
                    raise RuntimeError(f"{key}: {response.status_code} {response.text[:200]}")
    return timings


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
    print(f"{header} {'dims':>5} {'PSNR dB':>8}")
    for r in results:
        size = "x".join(map(str, r.photo.size))
        print(
            f"{r.photo.name:<20} {size:>11} {r.ours_ms:>8.1f} {r.sharp_ms:>9.1f} "
            f"{r.ours_ms / r.sharp_ms:>6.2f} {'yes' if r.dims_equal else 'NO':>5} "
            f"{r.psnr_db:>8.1f}"
        )


def summary_line(results: list[Result], function_ms: list[float]) -> str:
    twelve = [r for r in results if r.photo.kind == "jpeg12mp"]
    jpegs = [r for r in results if r.photo.kind.startswith("jpeg")]
    return (
        "bench thumbnail: "
        f"jpeg12mp_ms={statistics.median(r.ours_ms for r in twelve):.1f} "
        f"sharp_jpeg12mp_ms={statistics.median(r.sharp_ms for r in twelve):.1f} "
        f"jpeg_ratio={_ratio(jpegs):.2f} "
        f"mixed_ratio={_ratio(results):.2f} "
        f"dims_equal={sum(r.dims_equal for r in results)}/{len(results)} "
        f"psnr_min_db={min(r.psnr_db for r in results):.1f} "
        f"function_p50_ms={_percentile(function_ms, 50):.1f} "
        f"function_p95_ms={_percentile(function_ms, 95):.1f}"
    )


def _ratio(results: list[Result]) -> float:
    return sum(r.ours_ms for r in results) / sum(r.sharp_ms for r in results)


def _extension(photo: Photo) -> str:
    return {"png": "png", "webp": "webp"}.get(photo.kind, "jpg")


if __name__ == "__main__":
    main()
