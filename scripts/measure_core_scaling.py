"""How many cores an embed pod needs: the buffalo_l-sized graphs' inference time on 2, 4, ...
cores of the machine this runs on, to size the pod's CPU request (ORT_INTRA_OP_THREADS).

    python -m scripts.measure_core_scaling --cores 2 4

Runs a pack's detector (at 640×640) and recognizer (one face) with the embed function's own
session options, the process pinned to the first N cores and N intra-op threads: by default
scripts/reference_graphs.py's RANDOM-WEIGHT stand-ins (SCRFD-10GF, IResNet-50), not buffalo_l;
`--pack /models/buffalo_l` times the real one. Inference only: decoding a 12 MP JPEG adds ~70 ms
on one core whatever N is. Run it on the cluster's node type; the machine must have at least
the largest N cores free.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from devstack.make_test_model_pack import DETECTOR_FILE, RECOGNIZER_FILE
from devstack.stack import ROOT
from functions.embed import runtime
from functions.embed.settings import EmbedSettings
from scripts.reference_graphs import CROP, cached_pack

DETECTION_INPUT = (1, 3, 640, 640)
RECOGNITION_INPUT = (1, 3, CROP, CROP)
WARM_UP_RUNS = 3


def median_ms(session: ort.InferenceSession, shape: tuple[int, ...], runs: int) -> float:
    feed = {session.get_inputs()[0].name: np.random.rand(*shape).astype(np.float32)}
    for _ in range(WARM_UP_RUNS):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(pack: Path, cpus: list[int], runs: int) -> tuple[float, float]:
    """Median detection and one-face recognition ms on these CPUs, one thread each."""
    os.sched_setaffinity(0, cpus)
    settings = EmbedSettings().replace(intra_op_threads=len(cpus))
    options = runtime.session_options(settings)
    timings = []
    for name, shape in ((DETECTOR_FILE, DETECTION_INPUT), (RECOGNIZER_FILE, RECOGNITION_INPUT)):
        session = ort.InferenceSession(str(pack / name), options, providers=[runtime.CPU])
        timings.append(median_ms(session, shape, runs))
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per model")
    parser.add_argument("--pack", type=Path, help="a model pack (default: the stand-ins)")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-models")
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    if max(args.cores) > len(allowed):
        parser.error(f"this process may use {len(allowed)} cores, fewer than {max(args.cores)}")
    pack = args.pack or cached_pack(args.cache)
    label = pack if args.pack else "RANDOM-WEIGHT stand-ins, not buffalo_l"
    print(f"{label}; onnxruntime {ort.__version__}; medians ms")
    print(f"{'cores':>5} {'detect':>8} {'recognise':>10} {'1 face':>8} {'photos/s':>9}")
    for cores in args.cores:
        detect_ms, recognise_ms = measure(pack, allowed[:cores], args.runs)
        one_face_ms = detect_ms + recognise_ms
        print(
            f"{cores:>5} {detect_ms:>8.1f} {recognise_ms:>10.1f} {one_face_ms:>8.1f}"
            f" {1000 / one_face_ms:>9.2f}"
        )


if __name__ == "__main__":
    main()
