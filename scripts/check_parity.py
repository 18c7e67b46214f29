"""Prove, before switching over, that the embed function writes the vectors prod_batch_embed wrote.

    python -m scripts.check_parity --sample prod_sample.jsonl --bucket photos
    python -m scripts.check_parity --sample prod_sample.jsonl --photos-dir ./photos

The sample holds one JSON object per line, a photo's key and the faces production stored for it:

    {"key": "user42/photos/IMG_0001.jpg", "version_id": "4_z...",   (optional)
     "faces": [{"box": [x1, y1, x2, y2], "embedding": "<base64 of 512 little-endian float32>"}]}

(an embedding may also be a JSON list of 512 numbers). Each photo is read from the bucket
(S3_* settings, the version when given) or from `--photos-dir/<key>`, and run through the embed
function's own pipeline with its settings (MODEL_ROOT, MODEL_PACK, DET_SIZE, ...): decode,
detect, recognise. Faces are paired by box overlap (IoU >= 0.5); the report gives the cosine
similarity of each pair (min, p1, median), the photos whose face counts differ, and the faces
left unpaired. It exits 1 when any photo differs in count or fails, or a pair's cosine is below
`--min-cosine`.

When the function runs on an accelerator provider (OpenVINO in the CPU image, CUDA in the GPU
one), each photo also runs through a second analyzer on onnxruntime's CPU provider alone, the
provider production's FaceAnalysis runs on, and the two are compared face by face: the cosine
of the embeddings at least `--provider-min-cosine` (0.99999), boxes and landmarks within
`--provider-max-px` (0.01 px), the same face count; a `providers:` line reports it, and a
difference fails the check as a production one does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from functions.common.config import StorageSettings
from functions.common.errors import PermanentError, TransientError
from functions.common.storage import ObjectStore
from functions.embed import runtime
from functions.embed.decode import decode_photo
from functions.embed.encoding import embedding_from_base64
from functions.embed.models import Face, FaceAnalyzer
from functions.embed.settings import EmbedSettings

MIN_IOU = 0.5
WORST_SHOWN = 10
PROVIDER_MIN_COSINE = 0.99999
PROVIDER_MAX_PX = 0.01


@dataclass(frozen=True)
class StoredFace:
    box: tuple[float, float, float, float]
    embedding: np.ndarray


@dataclass(frozen=True)
class SamplePhoto:
    key: str
    version_id: str | None
    faces: list[StoredFace]


@dataclass
class Report:
    photos: int = 0
    production_faces: int = 0
    service_faces: int = 0
    cosines: list[tuple[float, str, tuple[float, ...]]] = field(default_factory=list)
    count_mismatches: list[str] = field(default_factory=list)
    unpaired_production: int = 0
    unpaired_service: int = 0
    failed: list[str] = field(default_factory=list)

    def passed(self, min_cosine: float) -> bool:
        """Every face paired and compared, and every pair at least `min_cosine` alike."""
        if self.count_mismatches or self.failed or self.unpaired_production:
            return False
        if self.unpaired_service:
            return False
        return min((cosine for cosine, _, _ in self.cosines), default=1.0) >= min_cosine


@dataclass
class ProviderCheck:
    """The function's providers against the CPU provider alone, on the same photos."""

    providers: list[str]
    photos: int = 0
    faces: int = 0
    cosine_min: float = 1.0
    box_max_px: float = 0.0
    landmark_max_px: float = 0.0
    count_mismatches: list[str] = field(default_factory=list)
    unpaired: int = 0

    def add(self, key: str, found: list[Face], on_cpu: list[Face]) -> None:
        self.photos += 1
        if len(found) != len(on_cpu):
            self.count_mismatches.append(f"{key}: {len(on_cpu)} on the CPU → {len(found)}")
        pairs = pair_faces(on_cpu, found)
        self.unpaired += len(found) + len(on_cpu) - 2 * len(pairs)
        for i, j in pairs:
            self.faces += 1
            self.cosine_min = min(self.cosine_min, cosine(on_cpu[i].embedding, found[j].embedding))
            box = np.abs(np.subtract(on_cpu[i].box, found[j].box)).max()
            points = np.abs(np.subtract(on_cpu[i].landmarks, found[j].landmarks)).max()
            self.box_max_px = max(self.box_max_px, float(box))
            self.landmark_max_px = max(self.landmark_max_px, float(points))

    def passed(self, min_cosine: float, max_px: float) -> bool:
        return (
            not self.count_mismatches
            and not self.unpaired
            and self.cosine_min >= min_cosine
            and max(self.box_max_px, self.landmark_max_px) <= max_px
        )


def read_sample(path: Path) -> Iterator[SamplePhoto]:
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                faces = [
                    StoredFace(tuple(map(float, face["box"])), _embedding(face["embedding"]))
                    for face in record["faces"]
                ]
                yield SamplePhoto(record["key"], record.get("version_id"), faces)
            except (ValueError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}:{number}: not a sample line: {exc}") from exc


def _embedding(value: str | list[float]) -> np.ndarray:
    if isinstance(value, str):
        return embedding_from_base64(value)
    return np.asarray(value, np.float32)


def pair_faces(stored: list[StoredFace] | list[Face], found: list[Face]) -> list[tuple[int, int]]:
    """(stored index, found index) pairs, greedily by highest box overlap, each face once."""
    overlaps = sorted(
        ((_iou(a.box, b.box), i, j) for i, a in enumerate(stored) for j, b in enumerate(found)),
        reverse=True,
    )
    pairs, used_stored, used_found = [], set(), set()
    for overlap, i, j in overlaps:
        if overlap < MIN_IOU:
            break
        if i not in used_stored and j not in used_found:
            pairs.append((i, j))
            used_stored.add(i)
            used_found.add(j)
    return pairs


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check(
    sample: Iterator[SamplePhoto],
    read_photo: Callable[[SamplePhoto], bytes],
    analyzer: FaceAnalyzer,
    settings: EmbedSettings,
    on_cpu: FaceAnalyzer | None = None,
    provider_check: ProviderCheck | None = None,
) -> Report:
    """Each photo through `analyzer` against production's faces and, given `on_cpu` (the same
    settings on the CPU provider alone), through both, recorded in `provider_check`."""
    report = Report()
    for photo in sample:
        report.photos += 1
        report.production_faces += len(photo.faces)
        try:
            decoded = decode_photo(read_photo(photo), settings)
            found = analyzer.analyze_photo(decoded)
        except (PermanentError, TransientError, OSError) as exc:
            report.failed.append(f"{photo.key}: {exc}")
            continue
        if on_cpu is not None and provider_check is not None:
            provider_check.add(photo.key, found, on_cpu.analyze_photo(decoded))
        report.service_faces += len(found)
        if len(found) != len(photo.faces):
            report.count_mismatches.append(f"{photo.key}: {len(photo.faces)} → {len(found)}")
        pairs = pair_faces(photo.faces, found)
        report.unpaired_production += len(photo.faces) - len(pairs)
        report.unpaired_service += len(found) - len(pairs)
        for i, j in pairs:
            similarity = cosine(photo.faces[i].embedding, found[j].embedding)
            report.cosines.append((similarity, photo.key, photo.faces[i].box))
    return report


def print_report(report: Report, min_cosine: float) -> None:
    values = np.array([cosine for cosine, _, _ in report.cosines] or [np.nan])
    stats = {
        "min": float(np.min(values)),
        "p1": float(np.percentile(values, 1)),
        "median": float(np.median(values)),
    }
    print(
        f"{report.photos} photos: production {report.production_faces} faces, "
        f"service {report.service_faces} faces, {len(report.cosines)} paired"
    )
    print("cosine per paired face: " + "  ".join(f"{k} {v:.6f}" for k, v in stats.items()))
    for similarity, key, box in sorted(report.cosines)[:WORST_SHOWN]:
        if similarity < min_cosine:
            print(f"  below {min_cosine}: {similarity:.6f}  {key}  box {[round(v) for v in box]}")
    print(f"face-count mismatches: {len(report.count_mismatches)} photos")
    for line in report.count_mismatches[:WORST_SHOWN]:
        print(f"  {line}")
    print(
        f"unpaired faces: production {report.unpaired_production}, "
        f"service {report.unpaired_service}"
    )
    print(f"photos that could not be processed: {len(report.failed)}")
    for line in report.failed[:WORST_SHOWN]:
        print(f"  {line}")
    verdict = "PASS" if report.passed(min_cosine) else "FAIL"
    print(
        f"parity: photos={report.photos} faces={len(report.cosines)} "
        f"cosine_min={stats['min']:.6f} cosine_p1={stats['p1']:.6f} "
        f"cosine_median={stats['median']:.6f} count_mismatches={len(report.count_mismatches)} "
        f"unpaired={report.unpaired_production + report.unpaired_service} "
        f"failed={len(report.failed)} {verdict}"
    )


def print_provider_check(check: ProviderCheck | None, min_cosine: float, max_px: float) -> None:
    if check is None:
        print("providers: CPUExecutionProvider alone, as production; no provider comparison")
        return
    for line in check.count_mismatches[:WORST_SHOWN]:
        print(f"  provider face-count mismatch: {line}")
    verdict = "PASS" if check.passed(min_cosine, max_px) else "FAIL"
    print(
        f"providers: {','.join(check.providers)} vs {runtime.CPU} photos={check.photos} "
        f"faces={check.faces} cosine_min={check.cosine_min:.7f} "
        f"box_max_px={check.box_max_px:.5f} landmark_max_px={check.landmark_max_px:.5f} "
        f"count_mismatches={len(check.count_mismatches)} unpaired={check.unpaired} {verdict}"
    )


def cpu_twin(settings: EmbedSettings) -> tuple[FaceAnalyzer | None, ProviderCheck | None]:
    """An analyzer with the same settings on the CPU provider alone, when the function's own
    runs on another provider; else nothing to compare."""
    chosen = runtime.providers(settings)
    if chosen == [runtime.CPU]:
        return None, None
    twin = FaceAnalyzer(settings.replace(providers=(runtime.CPU,)))
    twin.load()
    return twin, ProviderCheck(chosen)


def photo_reader(
    args: argparse.Namespace, settings: EmbedSettings
) -> Callable[[SamplePhoto], bytes]:
    if args.photos_dir:
        return lambda photo: (args.photos_dir / photo.key).read_bytes()
    store = ObjectStore(StorageSettings.from_env())
    return lambda photo: store.download(
        args.bucket, photo.key, photo.version_id, settings.limits.max_bytes
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, required=True, help="JSONL of stored faces")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bucket", help="read the photos from this bucket (S3_* settings)")
    source.add_argument("--photos-dir", type=Path, help="read the photos from DIR/<key>")
    parser.add_argument("--min-cosine", type=float, default=0.9999)
    parser.add_argument(
        "--provider-min-cosine",
        type=float,
        default=PROVIDER_MIN_COSINE,
        help="least cosine between the function's providers and the CPU provider alone",
    )
    parser.add_argument(
        "--provider-max-px",
        type=float,
        default=PROVIDER_MAX_PX,
        help="largest box or landmark difference in pixels between the two",
    )
    args = parser.parse_args(argv)
    settings = EmbedSettings.from_env()
    analyzer = FaceAnalyzer(settings)
    analyzer.load()
    on_cpu, provider_check = cpu_twin(settings)
    report = check(
        read_sample(args.sample),
        photo_reader(args, settings),
        analyzer,
        settings,
        on_cpu,
        provider_check,
    )
    print_report(report, args.min_cosine)
    print_provider_check(provider_check, args.provider_min_cosine, args.provider_max_px)
    providers_passed = provider_check is None or provider_check.passed(
        args.provider_min_cosine, args.provider_max_px
    )
    return 0 if report.passed(args.min_cosine) and providers_passed else 1


if __name__ == "__main__":
    sys.exit(main())
