"""Measure what JPEG shrink-on-load (DECODE_SHRINK_ON_LOAD) saves in time and costs in parity.

    python -m scripts.measure_decode_shrink

A generated 12 MP JPEG (4032×3024, quality 92) holds the TEST pack's face markers and the six
real people of insightface's own sample photo (insightface/data/images/t1.jpg), scaled so their
faces are about 80 px wide (`small faces`) or about 255 px (`large faces`). Full decode, which
production does, is compared with libjpeg's 1/2 and 1/4 scaled decode:

- decode: median milliseconds of cv2.imdecode;
- box shift: the largest difference of the markers' boxes, found by the TEST pack and mapped to
  full-resolution pixels;
- crop PSNR: of the 112×112 aligned face crops that recognition sees, for the six real faces
  (landmarks placed from ArcFace's template over each face, as alignment would);
- cosine: between the embeddings of those crops through a RANDOM-WEIGHT IResNet-50
  (scripts/reference_graphs.py), a proxy for buffalo_l's w600k_r50, which cannot be fetched here.

The first row of each block re-encodes the photo at JPEG quality 95, for scale. On real photos
and the real pack, measure with scripts/check_parity.py instead: a sample made with full decode,
checked with DECODE_SHRINK_ON_LOAD=true.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import insightface
import numpy as np
from insightface.utils import face_align
from PIL import Image

from devstack.make_test_model_pack import build_pack, draw_face
from devstack.sample_photos import sample_photo
from devstack.stack import ROOT
from functions.embed.decode import DecodedPhoto, decode_photo
from functions.embed.models import FaceAnalyzer, load_task_models
from functions.embed.settings import EmbedSettings
from scripts.bench_thumbnail import psnr
from scripts.check_parity import cosine
from scripts.reference_graphs import PACK_NAME, cached_pack

GROUP_PHOTO = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
SIZE = (4032, 3024)
# (centre, face width) of each person in t1.jpg (1280×886), read off the photo.
PEOPLE = (
    ((115, 330), 75),
    ((330, 200), 70),
    ((520, 320), 90),
    ((810, 380), 85),
    ((960, 120), 85),
    ((1180, 330), 80),
)
MARKERS = (
    ((400, 400), 200, 0),
    ((700, 1200), 340, 1),
    ((350, 2100), 130, 2),
    ((900, 2700), 260, 3),
)
REPEAT = 9


def photo(people_scale: float) -> tuple[bytes, list[np.ndarray]]:
    """The JPEG and the five ArcFace landmarks of each real face, in its pixels."""
    image = Image.open(io.BytesIO(sample_photo(3, 0, size=SIZE))).convert("RGB")
    with Image.open(GROUP_PHOTO) as group:
        size = (round(group.width * people_scale), round(group.height * people_scale))
        people = group.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    corner = np.array([SIZE[0] - people.width, SIZE[1] - people.height], np.float32)
    image.paste(people, tuple(int(v) for v in corner))
    for center, side, identity in MARKERS:
        draw_face(image, center, side, identity)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    landmarks = [
        corner
        + np.array(center, np.float32) * people_scale
        + (face_align.arcface_dst - 56.0) * (width * people_scale / 60.0)
        for center, width in PEOPLE
    ]
    return buffer.getvalue(), landmarks


def reencoded(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def median_ms(work: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        measure(build_pack(Path(scratch) / "buffalo_l"))


def measure(test_pack: Path) -> None:
    markers = EmbedSettings(model_root=test_pack.parent, providers=("CPUExecutionProvider",))
    analyzer = FaceAnalyzer(markers)
    analyzer.load()
    proxy_pack = cached_pack(ROOT / "var" / "bench-models")
    proxy = markers.replace(model_root=proxy_pack.parent, model_pack=PACK_NAME)
    recognizer = load_task_models(proxy, ["recognition"])["recognition"]
    recognizer.prepare(ctx_id=0)

    def embed(image: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crop = face_align.norm_crop(image, kps)
        return crop, recognizer.get_feat(crop)[0]

    print(
        "| faces | decode | decode ms | box shift px | crop PSNR dB (min) | cosine min / median |"
    )
    print("|---|---|---|---|---|---|")
    for label, people_scale in (("small faces ~80 px", 1.0), ("large faces ~255 px", 3.15)):
        data, landmarks = photo(people_scale)
        full = decode_photo(data, markers)
        boxes = sorted(face.box for face in analyzer.analyze_photo(full))
        reference = [embed(full.image, kps) for kps in landmarks]
        variants = [("re-encoded q95", reencoded(data), markers)]
        variants += [
            (f"1/{r}", data, markers.replace(decode_shrink=True, decode_min_side=SIZE[0] // r))
            for r in (1, 2, 4)
        ]
        for name, encoded, settings in variants:
            decoded: DecodedPhoto = decode_photo(encoded, settings)
            ms = median_ms(
                lambda encoded=encoded, settings=settings: decode_photo(encoded, settings)
            )
            found = sorted(face.box for face in analyzer.analyze_photo(decoded))
            shift = max(
                np.max(np.abs(np.subtract(a, b))) for a, b in zip(found, boxes, strict=True)
            )
            ours = [embed(decoded.image, kps / decoded.reduction) for kps in landmarks]
            quality = min(psnr(a[0], b[0]) for a, b in zip(reference, ours, strict=True))
            cosines = [cosine(a[1], b[1]) for a, b in zip(reference, ours, strict=True)]
            print(
                f"| {label} | {'full' if name == '1/1' else name} | {ms:.0f} | {shift:.2f} | "
                f"{quality:.1f} | {min(cosines):.5f} / {statistics.median(cosines):.5f} |"
            )


if __name__ == "__main__":
    main()
