"""Times the embed function's work per photo on buffalo_l-sized graphs, and insightface's stock
FaceAnalysis on the same photo.

The graphs are scripts/reference_graphs.py's RANDOM-WEIGHT stand-ins with buffalo_l's
architectures and compute (SCRFD-10GF with keypoints, IResNet-50), not the real weights; their
faces are the markers the photos carry. Photos are 12 MP JPEGs (4032×3024, quality 92, 4:2:0
chroma as phone cameras write them) with 1, 5 and 20 faces. Measured:

    download       ObjectStore.download of each photo from the local stack's S3 server
    in-function    what EmbedService.process does between the download and the Lambda call:
                   decode_photo, then FaceAnalyzer.analyze (detect + recognise); sequentially,
                   then with 2 requests at once (two threads sharing one FaceAnalyzer, as the
                   function's two gunicorn threads do), the latter also giving photos per second
    detect         FaceAnalyzer's detector alone on the decoded photo; recognise = analyze -
                   detect (medians)
    stock          FaceAnalysis(allowed_modules=['detection', 'recognition']).get(cv2.imread)
                   on onnxruntime's CPU provider, on the one- and five-face photos, after
                   prepare(ctx_id=0, det_size=(640, 640)), alternating with ours (decode +
                   analyze) so both see the same machine load
    bare           the floor under the in-function time, alternating with it on the one-face
                   photo: cv2.imdecode alone, and the same two graphs run directly with
                   InferenceSession.run on the function's providers, provider options, session
                   options and threads (the detector at 640x640, the recognizer on one face)

    cpu            CPU-seconds per one-face photo for `make capacity`, at the pod sizes it
                   models (2 and 4 vCPU): the in-function work with 2 requests at once, as the
                   pod's two gunicorn threads run it, ORT_INTRA_OP_THREADS = the pod's vCPUs
                   and the process pinned to that many CPUs; this process's CPU time (every
                   thread's: the requests', onnxruntime's and OpenVINO's) over the photos. A
                   size needing more CPUs than this machine has is not measured (make capacity
                   keeps its default for it). Written to var/bench/embed.json.

The last line sums it up: p95 of the sequential in-function time for the one- and twenty-face
photos, one-face photos per second with 2 requests at once, stock_ratio and stock_ratio_5faces
= the stock median over ours in the alternating runs, overhead_ratio = our median over the sum
of the bare decode and bare inference medians, and the execution provider that ran.

Run with `make bench-embed ARGS='--repeat 10'`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from insightface.app import FaceAnalysis
from PIL import Image

from devstack import make_test_model_pack
from devstack.make_test_model_pack import DETECTOR_FILE, RECOGNIZER_FILE, draw_face
from devstack.sample_photos import sample_photo
from devstack.stack import ROOT, LocalStack, StackConfig
from functions.common.storage import ObjectStore
from functions.embed import runtime
from functions.embed.decode import decode_photo
from functions.embed.models import FaceAnalyzer, load_task_models
from functions.embed.settings import EmbedSettings
from scripts.bench_results import write_result
from scripts.reference_graphs import PACK_NAME, cached_pack, multiply_accumulates

PHOTO_SIZE = (4032, 3024)
FACE_COUNTS = (1, 5, 20)
STOCK_FACE_COUNTS = (1, 5)
MARKER_SIDE = min(PHOTO_SIZE) // 12
CONCURRENCY = 2
# The embed pod sizes make capacity models (scripts/capacity.py, DEFAULT_CPU_S["embed"]).
POD_VCPUS = (2, 4)
T = TypeVar("T")


@dataclass(frozen=True)
class Photo:
    faces: int
    data: bytes


@dataclass(frozen=True)
class Run:
    decode_ms: float
    analyze_ms: float
    faces: int

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.analyze_ms


@dataclass(frozen=True)
class Load:
    """Runs of one photo, and how many photos per second they amounted to."""

    runs: list[Run]
    photos_per_s: float

    @property
    def totals(self) -> list[float]:
        return [run.total_ms for run in self.runs]


@dataclass(frozen=True)
class PhotoResult:
    photo: Photo
    download_ms: list[float]
    detect_ms: list[float]
    sequential: Load
    concurrent: Load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs per photo and mode")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-models")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    print("building or loading the random-weight pack ...", flush=True)
    pack = cached_pack(args.cache)
    print("generating photos ...", flush=True)
    photos = [Photo(faces, group_photo(faces)) for faces in FACE_COUNTS]
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        test_pack = make_test_model_pack.build_pack(scratch / "models" / "buffalo_l")
        print(f"downloads from the local S3 server: {len(photos)} photos x {args.repeat} ...")
        downloads = time_downloads(photos, scratch, args.repeat)
        settings = pack_settings(pack)
        analyzer = _loaded(settings)
        print(f"in-function: {len(photos)} photos x {args.repeat}, then x {args.repeat} ...")
        results = [
            measure(analyzer, settings, photo, downloads[photo.faces], args.repeat)
            for photo in photos
        ]
        marker_ms = _detect_ms(test_pack, photos[0], args.repeat)
        print(f"ours and the bare floor in turn: 1 photo x {args.repeat} ...", flush=True)
        overhead = compare_with_bare(analyzer, settings, photos[0], args.repeat)
        print(f"CPU time per photo: 1 photo x {CONCURRENCY * args.repeat} per pod size ...")
        cpu_s = cpu_per_photo(settings, photos[0], CONCURRENCY * args.repeat)
        by_faces = {photo.faces: photo for photo in photos}
        stock = {}
        for faces in STOCK_FACE_COUNTS:
            path = scratch / f"{faces}-faces.jpg"
            path.write_bytes(by_faces[faces].data)
            print(f"stock FaceAnalysis and ours in turn: {faces}-face photo x {args.repeat} ...")
            stock[faces] = compare_with_stock(analyzer, settings, pack, path, faces, args.repeat)
    print()
    print_header(pack, settings, args.repeat, load_before)
    print_detector_check(results[0], marker_ms)
    print_table(results)
    print_stock(stock)
    print_overhead(overhead)
    print_cpu(cpu_s, write_result("embed", cpu_result(cpu_s)))
    print(f"1-minute load average after the run: {os.getloadavg()[0]:.2f}")
    print(summary_line(results, stock, overhead, runtime.providers(settings)[0]))


def pack_settings(pack: Path) -> EmbedSettings:
    """The function's settings, from the environment as in the function, for `pack`."""
    return EmbedSettings.from_env().replace(model_root=pack.parent, model_pack=pack.name)


def group_photo(faces: int) -> bytes:
    """A 12 MP JPEG whose `faces` markers sit on a grid over sample_photo's background."""
    background = sample_photo(seed=faces, faces=0, size=PHOTO_SIZE)
    image = Image.open(io.BytesIO(background)).convert("RGB")
    width, height = PHOTO_SIZE
    columns = math.ceil(math.sqrt(faces * width / height))
    rows = math.ceil(faces / columns)
    for identity in range(faces):
        row, column = divmod(identity, columns)
        centre = (round((column + 0.5) * width / columns), round((row + 0.5) * height / rows))
        draw_face(image, centre, MARKER_SIDE, identity)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, subsampling="4:2:0")
    return buffer.getvalue()


def time_downloads(photos: list[Photo], scratch: Path, repeat: int) -> dict[int, list[float]]:
    """Milliseconds per ObjectStore.download from the stack's S3 server, by face count."""
    config = StackConfig(model_root=scratch / "models", workdir=scratch / "stack")
    timings: dict[int, list[float]] = {}
    with LocalStack(config) as stack:
        store = ObjectStore(stack.storage_settings())
        for photo in photos:
            key = f"bench/{photo.faces}-faces.jpg"
            stored = stack.s3().put_object(Bucket=config.bucket, Key=key, Body=photo.data)
            download = (config.bucket, key, stored["VersionId"], len(photo.data))
            store.download(*download)
            timings[photo.faces] = [
                _ms(lambda d=download: store.download(*d)) for _ in range(repeat)
            ]
    return timings


def measure(
    analyzer: FaceAnalyzer,
    settings: EmbedSettings,
    photo: Photo,
    download_ms: list[float],
    repeat: int,
) -> PhotoResult:
    first = run_once(analyzer, settings, photo.data)
    if first.faces != photo.faces:
        raise RuntimeError(f"found {first.faces} faces in a photo with {photo.faces} markers")
    image = decode_photo(photo.data, settings).image
    detect_ms = [_ms(lambda: analyzer.detector.predict(image)) for _ in range(repeat)]
    sequential = run_load(analyzer, settings, photo, repeat, workers=1)
    concurrent = run_load(analyzer, settings, photo, CONCURRENCY * repeat, CONCURRENCY)
    return PhotoResult(photo, download_ms, detect_ms, sequential, concurrent)


def run_once(analyzer: FaceAnalyzer, settings: EmbedSettings, data: bytes) -> Run:
    """The calls EmbedService.process makes between the download and the Lambda call."""
    started = time.perf_counter()
    decoded = decode_photo(data, settings)
    decoded_at = time.perf_counter()
    faces = analyzer.analyze_photo(decoded)
    finished = time.perf_counter()
    return Run((decoded_at - started) * 1000, (finished - decoded_at) * 1000, len(faces))


def run_load(
    analyzer: FaceAnalyzer, settings: EmbedSettings, photo: Photo, count: int, workers: int
) -> Load:
    """`count` runs of the photo, `workers` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(lambda _: run_once(analyzer, settings, photo.data), range(count)))
    return Load(runs, count / (time.perf_counter() - started))


def cpu_per_photo(settings: EmbedSettings, photo: Photo, count: int) -> dict[int, float]:
    """CPU-seconds per photo of the in-function work as an embed pod of each POD_VCPUS size
    runs it (2 requests at once, that many intra-op threads, that many CPUs), by size; the
    sizes needing more CPUs than this process may use are left out."""
    allowed = sorted(os.sched_getaffinity(0))
    costs = {}
    for vcpu in POD_VCPUS:
        if vcpu > len(allowed):
            continue
        with _on_cpus(set(allowed[:vcpu])):
            sized = settings.replace(intra_op_threads=vcpu)
            analyzer = _loaded(sized)  # its thread pools start here, on these CPUs
            run_once(analyzer, sized, photo.data)
            before = time.process_time()
            load = run_load(analyzer, sized, photo, count, CONCURRENCY)
            costs[vcpu] = (time.process_time() - before) / len(load.runs)
    return costs


@contextlib.contextmanager
def _on_cpus(cpus: set[int]) -> Iterator[None]:
    """This thread, and the threads it starts meanwhile, on `cpus` only."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def cpu_result(cpu_s: dict[int, float]) -> dict[str, float | str]:
    """var/bench/embed.json's fields: `cpu_s_per_photo_<N>vcpu` for each size measured (the
    keys make capacity reads), and which sizes were not."""
    fields: dict[str, float | str] = {
        f"cpu_s_per_photo_{vcpu}vcpu": round(cost, 4) for vcpu, cost in sorted(cpu_s.items())
    }
    fields["photo"] = f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, 1 face, random-weight buffalo_l"
    missing = [vcpu for vcpu in POD_VCPUS if vcpu not in cpu_s]
    if missing:
        fields["not_measured"] = (
            ", ".join(f"{vcpu} vCPU" for vcpu in missing)
            + f": this machine has {len(os.sched_getaffinity(0))} CPUs"
        )
    return fields


@dataclass(frozen=True)
class StockComparison:
    stock_ms: list[float]
    ours_ms: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.stock_ms) / statistics.median(self.ours_ms)


def compare_with_stock(
    analyzer: FaceAnalyzer,
    settings: EmbedSettings,
    pack: Path,
    path: Path,
    faces: int,
    repeat: int,
) -> StockComparison:
    """insightface's FaceAnalysis `get(cv2.imread(path))` on the pack, on onnxruntime's CPU
    provider, and ours, in turn."""

    def prepared() -> FaceAnalysis:
        app = FaceAnalysis(
            name=PACK_NAME,
            root=str(pack.parent.parent),
            allowed_modules=["detection", "recognition"],
            providers=[runtime.CPU],
        )
        app.prepare(ctx_id=0, det_size=(640, 640))
        return app

    app = _quietly(prepared)
    if len(app.get(cv2.imread(str(path)))) != faces:
        raise RuntimeError(f"stock FaceAnalysis did not find the {faces} faces")
    data = path.read_bytes()
    stock_ms, ours_ms = [], []
    for _ in range(repeat):
        stock_ms.append(_ms(lambda: app.get(cv2.imread(str(path)))))
        ours_ms.append(run_once(analyzer, settings, data).total_ms)
    return StockComparison(stock_ms, ours_ms)


@dataclass(frozen=True)
class BareComparison:
    """Our in-function times and, alternating with them, the bare decode and inference."""

    ours_ms: list[float]
    decode_ms: list[float]
    inference_ms: list[float]

    @property
    def floor_ms(self) -> float:
        return statistics.median(self.decode_ms) + statistics.median(self.inference_ms)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours_ms) / self.floor_ms


class BareInference:
    """The pack's detector and recognizer as bare onnxruntime sessions, with the function's
    providers, provider options and session options: InferenceSession.run and nothing else."""

    def __init__(self, settings: EmbedSettings, faces: int) -> None:
        models = load_task_models(settings, ["detection", "recognition"])
        size = settings.det_size
        width, height = models["recognition"].input_size
        shapes = {"detection": (1, 3, size, size), "recognition": (faces, 3, height, width)}
        rng = np.random.default_rng(0)
        self.runs = []
        for taskname, shape in shapes.items():
            session = models[taskname].session
            blob = rng.uniform(-1, 1, shape).astype(np.float32)
            self.runs.append((session, {session.get_inputs()[0].name: blob}))

    def __call__(self) -> None:
        for session, feed in self.runs:
            session.run(None, feed)


def compare_with_bare(
    analyzer: FaceAnalyzer, settings: EmbedSettings, photo: Photo, repeat: int
) -> BareComparison:
    """Ours (decode + analyze), cv2.imdecode alone and the bare graphs, in turn."""
    bare = BareInference(settings, photo.faces)
    buffer = np.frombuffer(photo.data, np.uint8)
    bare()
    ours_ms, decode_ms, inference_ms = [], [], []
    for _ in range(repeat):
        ours_ms.append(run_once(analyzer, settings, photo.data).total_ms)
        decode_ms.append(_ms(lambda: cv2.imdecode(buffer, cv2.IMREAD_COLOR)))
        inference_ms.append(_ms(bare))
    return BareComparison(ours_ms, decode_ms, inference_ms)


def _detect_ms(pack: Path, photo: Photo, repeat: int) -> list[float]:
    """The detector of `pack` alone on the photo, with the function's settings."""
    settings = pack_settings(pack)
    analyzer = _loaded(settings)
    image = decode_photo(photo.data, settings).image
    return [_ms(lambda: analyzer.detector.predict(image)) for _ in range(repeat)]


def _loaded(settings: EmbedSettings) -> FaceAnalyzer:
    analyzer = FaceAnalyzer(settings)
    analyzer.load()
    return analyzer


def _quietly(build: Callable[[], T]) -> T:
    """insightface prints a line per model its own FaceAnalysis loads."""
    with contextlib.redirect_stdout(io.StringIO()):
        return build()


def _ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def print_header(pack: Path, settings: EmbedSettings, repeat: int, load_before: float) -> None:
    detector = onnx.load(pack / DETECTOR_FILE)
    recognizer = onnx.load(pack / RECOGNIZER_FILE)
    square = multiply_accumulates(detector, [1, 3, 640, 640]) / 1e9
    vga = multiply_accumulates(detector, [1, 3, 480, 640]) / 1e9
    per_face = multiply_accumulates(recognizer, [1, 3, 112, 112]) / 1e9
    print("Numbers from RANDOM-WEIGHT graphs with buffalo_l's architectures, NOT buffalo_l:")
    print(
        f"  {DETECTOR_FILE}: SCRFD-10GF with keypoints, {square:.2f} GMAC at 640x640 "
        f"({vga:.2f} at 640x480, where SCRFD's 10 GFLOPs are counted)"
    )
    print(f"  {RECOGNIZER_FILE}: IResNet-50, {per_face:.2f} GMAC per face at 112x112")
    chosen = runtime.providers(settings)
    options = runtime.provider_options(settings, chosen)
    named = [
        f"{name} {option}" if option else name for name, option in zip(chosen, options, strict=True)
    ]
    print(f"  providers: {', '.join(named)}")
    print(
        f"  onnxruntime {ort.__version__}, {settings.intra_op_threads} intra-op threads, "
        f"decode_shrink={settings.decode_shrink}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); photos "
        f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG; {repeat} runs per photo sequentially, "
        f"{CONCURRENCY * repeat} with {CONCURRENCY} at once; times in ms"
    )
    print(
        f"  1-minute load average before the run: {load_before:.2f} (other processes on "
        "these CPUs slow every number down)"
    )


def print_detector_check(one_face: PhotoResult, marker_ms: list[float]) -> None:
    print(
        f"  detector check: {statistics.median(one_face.detect_ms):.1f} ms per detection, "
        f"{statistics.median(marker_ms):.1f} ms for its marker branch alone (the backbone runs)"
    )


def print_table(results: list[PhotoResult]) -> None:
    print(
        f"{'faces':>5} {'MB':>5} {'download':>8} | {'mode':<10} {'runs':>4} {'decode':>7} "
        f"{'detect':>7} {'recog':>7} {'median':>7} {'p95':>7} {'photos/s':>8}"
    )
    for r in results:
        prefix = (
            f"{r.photo.faces:>5} {len(r.photo.data) / 1e6:>5.1f} "
            f"{statistics.median(r.download_ms):>8.1f} |"
        )
        seq = r.sequential
        decode = statistics.median(run.decode_ms for run in seq.runs)
        detect = statistics.median(r.detect_ms)
        recognise = statistics.median(run.analyze_ms for run in seq.runs) - detect
        print(
            f"{prefix} {'sequential':<10} {len(seq.runs):>4} {decode:>7.1f} {detect:>7.1f} "
            f"{recognise:>7.1f} {_stats(seq)}"
        )
        conc = r.concurrent
        blank = f"{'':>5} {'':>5} {'':>8} |"
        mode = f"{CONCURRENCY} at once"
        print(f"{blank} {mode:<10} {len(conc.runs):>4} {'':>7} {'':>7} {'':>7} {_stats(conc)}")
    print(
        "download: median of ObjectStore.download from the local S3 server, not in the "
        "times right of it; detect: the detector alone; recog = analyze - detect (medians)"
    )


def _stats(load: Load) -> str:
    totals = load.totals
    return f"{statistics.median(totals):>7.1f} {_p95(totals):>7.1f} {load.photos_per_s:>8.2f}"


def print_stock(stock: dict[int, StockComparison]) -> None:
    for faces, comparison in stock.items():
        print(
            f"{faces} face(s), stock FaceAnalysis.get(cv2.imread(path)) on the CPU provider and "
            f"ours in turn: stock median {statistics.median(comparison.stock_ms):.1f} p95 "
            f"{_p95(comparison.stock_ms):.1f}, ours median "
            f"{statistics.median(comparison.ours_ms):.1f} p95 {_p95(comparison.ours_ms):.1f}, "
            f"ratio {comparison.ratio:.2f}"
        )


def print_overhead(overhead: BareComparison) -> None:
    print(
        "1 face, ours and the bare floor in turn: ours median "
        f"{statistics.median(overhead.ours_ms):.1f}, cv2.imdecode median "
        f"{statistics.median(overhead.decode_ms):.1f} + bare inference (detector 640x640 + "
        f"recognizer 1 face) median {statistics.median(overhead.inference_ms):.1f} = "
        f"{overhead.floor_ms:.1f}, ratio {overhead.ratio:.3f}"
    )


def print_cpu(cpu_s: dict[int, float], path: Path) -> None:
    measured = ", ".join(f"{vcpu} vCPU {cost:.3f}" for vcpu, cost in sorted(cpu_s.items()))
    missing = [f"{vcpu} vCPU" for vcpu in POD_VCPUS if vcpu not in cpu_s]
    print(
        f"CPU-seconds per one-face photo for make capacity: {measured or 'none'}"
        + (f" ({', '.join(missing)}: more CPUs than this machine has)" if missing else "")
        + f"; written to {path}"
    )


def summary_line(
    results: list[PhotoResult],
    stock: dict[int, StockComparison],
    overhead: BareComparison,
    provider: str,
) -> str:
    by_faces = {r.photo.faces: r for r in results}
    return (
        "bench embed: "
        f"p95_ms_1face={_p95(by_faces[1].sequential.totals):.1f} "
        f"p95_ms_20faces={_p95(by_faces[20].sequential.totals):.1f} "
        f"photos_per_s_1face={by_faces[1].concurrent.photos_per_s:.2f} "
        f"stock_ratio={stock[1].ratio:.2f} "
        f"stock_ratio_5faces={stock[5].ratio:.2f} "
        f"overhead_ratio={overhead.ratio:.3f} "
        f"provider={provider}"
    )


if __name__ == "__main__":
    main()
