"""`make soak`: the pipeline under steady load for a while, to catch what only time shows:
memory that keeps growing, photos lost, Redis filling up, a backlog that never drains.

Starts the local stack and uploads photos at a steady rate for several users, each with B2's
signed webhook, as `make demo` does. Every `--sample-every` seconds it samples each part's
resident memory (a function's gunicorn master with its workers), Redis's used memory, and the
photos uploaded and finished. When the time is up it waits for the backlog to drain, prints the
samples and, last, `soak: minutes=… photos=… … lost=… rss_growth_mb=…`.

Exit status 1 when a photo is lost or when a part's memory grew by more than `--max-growth-mb`
over the second half of the load (after warm-up a steady service's memory is flat).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

from scripts import demo
from scripts.processes import usage_with_children
from scripts.sample_photos import sample_photo
from scripts.stack import ROOT, LocalStack, StackConfig, model_root_or_test_pack

MB = 1 << 20
DISTINCT_PHOTOS = 12  # generated once, uploaded again and again under new keys
WATCHED = ("receiver", "broker", "thumbnail", "embed", "status", "status-dead-letter", "redis")


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    rss_mb: dict[str, float]  # by part
    redis_used_mb: float
    uploaded: int
    finished: int  # embedded or failed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="how long to keep uploading")
    parser.add_argument("--rate", type=float, default=2, help="photos per second, all users")
    parser.add_argument("--users", type=int, default=3, help="users uploading in turn")
    parser.add_argument("--sample-every", type=float, default=30, help="seconds between samples")
    parser.add_argument(
        "--max-growth-mb",
        type=float,
        default=64,
        help="most a part's memory may grow over the second half of the load",
    )
    parser.add_argument("--drain-timeout", type=float, default=600, help="seconds to drain")
    parser.add_argument("--model-root", type=Path, default=ROOT / "var" / "models")
    return parser.parse_args(argv)


def upload_steadily(
    stack: LocalStack,
    uploads: list[demo.Upload],
    pool: list[tuple[bytes, int]],
    rate: float,
    until: float,
) -> None:
    """One photo of `pool` (JPEG, faces drawn) every 1/rate seconds, users in turn, until the
    monotonic time `until`. An upload that takes longer than its slot delays the next one:
    missed slots are skipped, never caught up in a burst."""
    s3 = stack.s3()
    next_at, index = time.monotonic(), 0
    while next_at < until:
        time.sleep(max(0.0, next_at - time.monotonic()))
        upload = uploads[index % len(uploads)]
        key = f"{upload.user_id}/photos/SOAK_{index:06d}.jpg"
        photo = demo.Photo(key, *pool[index % len(pool)])
        upload.photos.append(photo)
        demo.upload_photo(stack, s3, upload, photo)
        index += 1
        next_at = max(next_at + 1 / rate, time.monotonic())
    for upload in uploads:
        upload.finished_at = time.time()


def take_sample(
    stack: LocalStack, store: redis.Redis, uploads: list[demo.Upload], started: float
) -> Sample:
    """Raises requests.RequestException when the status function does not answer."""
    pids = stack.pids()
    statuses = [demo.fetch_status(stack, upload.user_id)["counts"] for upload in uploads]
    return Sample(
        elapsed_s=time.monotonic() - started,
        # A part that has died (no pid any more) shows 0 MB.
        rss_mb={
            name: usage_with_children(pids[name]).rss_bytes / MB if name in pids else 0.0
            for name in WATCHED
        },
        redis_used_mb=store.info("memory")["used_memory"] / MB,
        uploaded=sum(len(upload.photos) for upload in uploads),
        finished=sum(demo.ended(counts) for counts in statuses),
    )


def add_sample(
    samples: list[Sample],
    stack: LocalStack,
    store: redis.Redis,
    uploads: list[demo.Upload],
    started: float,
) -> bool:
    """Append a sample; False, with a line saying why, when the status poll failed."""
    try:
        samples.append(take_sample(stack, store, uploads, started))
    except requests.RequestException as exc:  # a passing fault; the next sample comes
        print(f"sample skipped, the status poll failed: {exc}", flush=True)
        return False
    return True


def memory_growth_mb(samples: list[Sample], load_s: float) -> dict[str, float]:
    """Each part's memory at the end of the load less its memory halfway through it."""
    under_load = [s for s in samples if s.elapsed_s <= load_s] or samples
    halfway = min(under_load, key=lambda s: abs(s.elapsed_s - load_s / 2))
    last = under_load[-1]
    return {name: last.rss_mb[name] - halfway.rss_mb[name] for name in last.rss_mb}


def print_samples(samples: list[Sample]) -> None:
    header = f"{'s':>6} " + " ".join(f"{name:>9}" for name in WATCHED)
    header += f" {'redis mem':>9} {'uploaded':>8} {'finished':>8}"
    print("\nresident memory (MB) of each part, and Redis's own accounting\n" + header)
    print("-" * len(header))
    for sample in samples:
        memory = " ".join(f"{sample.rss_mb[name]:9.1f}" for name in WATCHED)
        print(
            f"{sample.elapsed_s:6.0f} {memory} {sample.redis_used_mb:9.1f}"
            f" {sample.uploaded:8} {sample.finished:8}"
        )


def run(stack: LocalStack, args: argparse.Namespace) -> int:
    uploads = [demo.Upload(f"soak{n + 1}", []) for n in range(args.users)]
    pool = [(sample_photo(seed=n, faces=n % 3), n % 3) for n in range(DISTINCT_PHOTOS)]
    load_s = args.minutes * 60
    started = time.monotonic()
    uploader = threading.Thread(
        target=upload_steadily, args=(stack, uploads, pool, args.rate, started + load_s)
    )
    uploader.start()
    store = redis.Redis.from_url(stack.urls["redis"])
    samples: list[Sample] = []
    while uploader.is_alive():
        if add_sample(samples, stack, store, uploads, started):
            print(
                f"{samples[-1].elapsed_s:5.0f} s: {samples[-1].uploaded} uploaded,"
                f" {samples[-1].finished} finished",
                flush=True,
            )
        uploader.join(timeout=args.sample_every)
    statuses = demo.watch(stack, uploads, args.drain_timeout)
    add_sample(samples, stack, store, uploads, started)
    print_samples(samples)
    lambda_calls = requests.get(f"{stack.urls['lambda']}/_invocations", timeout=10).json()
    return summarize(args, uploads, statuses, samples, lambda_calls)


def summarize(
    args: argparse.Namespace,
    uploads: list[demo.Upload],
    statuses: dict[str, dict],
    samples: list[Sample],
    lambda_calls: list[dict],
) -> int:
    counts = [statuses[upload.user_id]["counts"] for upload in uploads]
    photos = sum(len(upload.photos) for upload in uploads)
    failed = sum(c["thumbnails_failed"] + c["embeddings_failed"] for c in counts)
    lost = photos - sum(demo.ended(c) for c in counts)
    growth = memory_growth_mb(samples, load_s=args.minutes * 60)
    grown = {name: mb for name, mb in growth.items() if mb > args.max_growth_mb}
    print(demo.per_photo_latency(uploads, lambda_calls))
    print(
        "memory growth over the second half of the load (MB): "
        + ", ".join(f"{name} {mb:+.1f}" for name, mb in growth.items())
    )
    for name, mb in grown.items():
        print(f"  {name} grew {mb:.1f} MB, more than --max-growth-mb {args.max_growth_mb:g}")
    print(
        f"soak: minutes={args.minutes:g} photos={photos}"
        f" thumbnails={sum(c['thumbnails_done'] for c in counts)}"
        f" embeddings={sum(c['embeddings_done'] for c in counts)} failed={failed} lost={lost}"
        f" rss_growth_mb={max(growth.values()):.1f}"
        f" redis_used_mb={samples[-1].redis_used_mb:.1f}"
    )
    return 1 if lost or grown else 0


def main() -> int:
    args = parse_args()
    root = model_root_or_test_pack(args.model_root)
    config = StackConfig(model_root=root, workdir=ROOT / "var" / f"soak-{int(time.time())}")
    print(
        f"starting the local stack; then {args.rate:g} photos/s for {args.minutes:g} min,"
        f" {args.users} users in turn"
    )
    try:
        with LocalStack(config) as stack:
            return run(stack, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
