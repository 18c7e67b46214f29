"""`make soak`: the pipeline under steady load for a while, to catch what only time shows:
memory that keeps growing, photos lost or stuck, the database Lambda called twice for the same
work, Redis filling up, a backlog that never drains.

Starts the local stack and uploads photos at a steady rate for several users, each with B2's
signed webhook, as `make demo` does. Every `--sample-every` seconds it samples each part's
resident memory (a function's gunicorn master with its workers), Redis's used memory, and the
photos uploaded and finished. When the time is up it waits for the backlog to drain, prints the
samples, reconciles every photo with the bucket, the Lambda's invocations and the status store
(devstack/reconcile.py) and prints, last, `soak: minutes=… redis_used_mb=… miscounted=…
photos=… thumbnails=… embeddings=… failed=… lost=… double_called=… stuck=… rss_growth_mb=…`.

`--faults` also injects, each once, at times drawn from `--seed` between 10 % and 80 % of the
load: SIGKILL of a gunicorn worker of thumbnail, embed and the receiver; a restart of
redis-server (down 2 s, same port, its append-only file kept); the S3 server and the database
Lambda answering 503 for 5-10 s, and holding requests past the functions' client timeouts for
5-10 s (devstack/fault_proxy.py, between the functions and them; the soak's own uploads and
checks reach S3 directly). And B2 delivering one webhook in ten again: half an earlier
notification byte for byte, half a new notification that also holds an earlier event. Each
fault is printed as it is injected.

Exit status 1 when a photo is lost or stuck, the Lambda was called twice for a photo's stage,
a counter is off, or a part's memory grew by more than `--max-growth-mb` over the second half
of the load (after warm-up a steady service's memory is flat).
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from devstack import fault_proxy, reconcile
from devstack.processes import usage_with_children
from devstack.sample_photos import sample_photo
from devstack.stack import ROOT, LocalStack, StackConfig, fetch_status, model_root_or_test_pack
from functions.common.events import PhotoRef
from functions.common.pipeline import PIPELINE
from functions.thumbnail.settings import ThumbnailSettings
from scripts import demo

MB = 1 << 20
DISTINCT_PHOTOS = 12  # generated once, uploaded again and again under new keys
WATCHED = ("receiver", "broker", *PIPELINE.names, "status", "status-dead-letter", "redis")

# `action:target`: a worker killed, a server restarted, or a fault proxy's window.
FAULT_KINDS = (
    "kill:thumbnail",
    "kill:embed",
    "kill:receiver",
    "restart:redis",
    "error:s3",
    "timeout:s3",
    "error:lambda",
    "timeout:lambda",
)
FAULTS_SPAN = (0.1, 0.8)  # of the load: its end shows the pipeline recovered
WINDOW_S = (5.0, 10.0)
REDIS_DOWN_S = 2.0
DUPLICATED = REBATCHED = 0.05  # of the webhooks
REDELIVERED_AFTER = 10  # uploads: B2 delivers again only after a while
# Under --faults the functions give up on S3 and the Lambda within seconds (their defaults are
# 20 s and 10 s), and the sweeper fails a photo whose event was lost well within the drain.
FAULT_ENV = {
    "S3_READ_TIMEOUT_S": "4",
    "DB_LAMBDA_TIMEOUT_S": "4",
    "PENDING_DEADLINE_S": "120",
    "SWEEP_INTERVAL_S": "5",
}


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
    parser.add_argument("--faults", action="store_true", help="inject faults while uploading")
    parser.add_argument("--seed", type=int, default=1, help="draws the faults' schedule")
    parser.add_argument("--model-root", type=Path, default=ROOT / "var" / "models")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Fault:
    at_s: float  # into the load
    kind: str  # one of FAULT_KINDS
    window_s: float  # how long a proxy's window lasts


def fault_schedule(load_s: float, seed: int) -> list[Fault]:
    """Each kind of fault once, in an order drawn from `seed`, each at a random time in its own
    equal slot of FAULTS_SPAN of the load."""
    rng = random.Random(seed)
    start, end = (load_s * share for share in FAULTS_SPAN)
    slot_s = (end - start) / len(FAULT_KINDS)
    return [
        Fault(start + slot_s * (index + rng.random()), kind, rng.uniform(*WINDOW_S))
        for index, kind in enumerate(rng.sample(FAULT_KINDS, len(FAULT_KINDS)))
    ]


def say(started: float, at: float, text: str) -> None:
    """A line stamped with when `at` (time.time()) was: seconds into the soak (begun at
    `started`, time.monotonic()) and the wall clock."""
    elapsed = time.monotonic() - started - (time.time() - at)
    print(f"{elapsed:6.1f} s ({reconcile.clock(at)}) {text}", flush=True)


def inject(stack: LocalStack, fault: Fault) -> str:
    """Inject the fault; what was done, in words."""
    action, target = fault.kind.split(":")
    if action == "kill":
        return f"SIGKILL {target} worker {stack.kill_worker(target)}, its master starts another"
    if action == "restart":
        stack.restart(target, down_s=REDIS_DOWN_S)
        return f"{target} stopped (SIGTERM), started again {REDIS_DOWN_S:g} s later"
    fault_proxy.set_fault(stack.urls[f"{target}-proxy"], action, fault.window_s)
    answer = "503" if action == "error" else "nothing (requests held past the timeouts)"
    return f"{target} answers {answer} for {fault.window_s:.1f} s"


def inject_on_schedule(stack: LocalStack, schedule: list[Fault], started: float) -> None:
    for fault in schedule:
        time.sleep(max(0.0, started + fault.at_s - time.monotonic()))
        at = time.time()
        try:
            done = inject(stack, fault)
        except Exception as exc:  # said, and the soak goes on with the next fault
            done = f"{fault.kind} could not be injected: {exc}"
        say(started, at, f"fault: {done}")


@dataclass
class Webhooks:
    """B2's side of the load: puts each photo and delivers its webhook, remembering every
    notification and the photo versions announced; with an `rng` (under --faults) it also
    delivers again as B2 does, DUPLICATED of the time an earlier notification byte for byte,
    REBATCHED of the time an earlier event within the next new notification."""

    stack: LocalStack
    started: float
    rng: random.Random | None = None
    photos: list[PhotoRef] = field(default_factory=list)
    sent: list[list[dict[str, Any]]] = field(default_factory=list)

    def upload(self, s3: Any, upload: demo.Upload, photo: demo.Photo) -> None:
        """Put the photo in the bucket and deliver B2's webhook for it; a failure is noted in
        `upload.errors`, never raised."""
        try:
            self._notify(self._put(s3, upload, photo), photo)
        except Exception as exc:  # every lost upload is reported instead of stopping the run
            upload.errors.append(f"{photo.key}: {exc}")

    def _put(self, s3: Any, upload: demo.Upload, photo: demo.Photo) -> dict[str, Any]:
        """The photo in the bucket; B2's event for it."""
        event = demo.put_photo(self.stack, s3, photo)
        bucket, version = event["bucketName"], event["objectVersionId"]
        self.photos.append(PhotoRef(bucket, photo.key, version, upload.user_id))
        return event

    def _notify(self, event: dict[str, Any], photo: demo.Photo) -> None:
        """Deliver the event's notification, and any redelivery drawn for it."""
        redelivery, earlier = self._redelivery()
        notification = [event]
        if redelivery == "rebatched":
            notification.insert(0, earlier[-1])
            self._say(f"event of {earlier[-1]['objectName']} again, with {photo.key}'s")
        sent_at = time.time()
        demo.deliver_webhook(self.stack, notification)
        photo.webhook_sent_at = sent_at
        self.sent.append(notification)
        if redelivery == "duplicate":
            keys = ", ".join(event["objectName"] for event in earlier)
            self._say(f"notification of {keys} again, byte for byte")
            demo.deliver_webhook(self.stack, earlier)

    def _redelivery(self) -> tuple[str | None, list[dict[str, Any]]]:
        """Whether this upload comes with a redelivery, and of which earlier notification."""
        old = self.sent[:-REDELIVERED_AFTER]
        if self.rng is None or not old:
            return None, []
        draw = self.rng.random()
        if draw >= DUPLICATED + REBATCHED:
            return None, []
        return ("duplicate" if draw < DUPLICATED else "rebatched"), self.rng.choice(old)

    def _say(self, redelivered: str) -> None:
        say(self.started, time.time(), f"fault: B2 delivers the {redelivered}")


def upload_steadily(
    stack: LocalStack,
    uploads: list[demo.Upload],
    pool: list[tuple[bytes, int]],
    rate: float,
    until: float,
    webhooks: Webhooks,
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
        webhooks.upload(s3, upload, photo)
        index += 1
        next_at = max(next_at + 1 / rate, time.monotonic())
    for upload in uploads:
        upload.finished_at = time.time()


def take_sample(
    stack: LocalStack, store: redis.Redis, uploads: list[demo.Upload], started: float
) -> Sample:
    """Raises requests.RequestException or redis.RedisError when the status function or Redis
    does not answer."""
    pids = stack.pids()
    statuses = [fetch_status(stack, upload.user_id)["counts"] for upload in uploads]
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
    """Append a sample; False, with a line saying why, when the status function or Redis did
    not answer."""
    try:
        samples.append(take_sample(stack, store, uploads, started))
    except (requests.RequestException, redis.RedisError) as exc:  # a passing fault
        print(f"sample skipped: {exc}", flush=True)
        return False
    return True


def memory_growth_mb(samples: list[Sample], load_s: float) -> dict[str, float]:
    """Each part's peak memory in the second half of the load less its peak in the first:
    peaks, so that memory a process gives back between requests and takes again is no growth,
    while memory that keeps rising is."""
    under_load = [s for s in samples if s.elapsed_s <= load_s] or samples
    first = [s for s in under_load if s.elapsed_s <= load_s / 2] or under_load[:1]
    second = [s for s in under_load if s.elapsed_s > load_s / 2] or under_load[-1:]
    return {
        name: max(s.rss_mb[name] for s in second) - max(s.rss_mb[name] for s in first)
        for name in under_load[-1].rss_mb
    }


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
    webhooks = Webhooks(stack, started, random.Random(args.seed) if args.faults else None)
    uploader = threading.Thread(
        target=upload_steadily,
        args=(stack, uploads, pool, args.rate, started + load_s, webhooks),
    )
    uploader.start()
    schedule = fault_schedule(load_s, args.seed) if args.faults else []
    injector = threading.Thread(
        target=inject_on_schedule, args=(stack, schedule, started), daemon=True
    )
    injector.start()
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
    injector.join()
    statuses, _ = demo.watch(stack, uploads, args.drain_timeout)
    add_sample(samples, stack, store, uploads, started)
    print_samples(samples)
    lambda_calls = reconcile.lambda_invocations(stack)
    evidence = reconcile.gather(stack, [upload.user_id for upload in uploads], lambda_calls)
    template = ThumbnailSettings.from_env().key_template
    result = reconcile.reconcile(webhooks.photos, evidence, template)
    return summarize(args, uploads, statuses, samples, lambda_calls, result)


def summarize(
    args: argparse.Namespace,
    uploads: list[demo.Upload],
    statuses: dict[str, dict],
    samples: list[Sample],
    lambda_calls: list[dict],
    result: reconcile.Reconciliation,
) -> int:
    growth = memory_growth_mb(samples, load_s=args.minutes * 60)
    grown = {name: mb for name, mb in growth.items() if mb > args.max_growth_mb}
    print(demo.per_photo_latency(uploads, lambda_calls))
    print(
        "memory growth over the second half of the load (MB): "
        + ", ".join(f"{name} {mb:+.1f}" for name, mb in growth.items())
    )
    for name, mb in grown.items():
        print(f"  {name} grew {mb:.1f} MB, more than --max-growth-mb {args.max_growth_mb:g}")
    for error in (error for upload in uploads for error in upload.errors):
        print(f"  upload error: {error}")
    for failure in (f for status in statuses.values() for f in status["failures"]):
        print(f"  failed: {failure['photo_id']} ({failure['reason']}: {failure['detail']})")
    for finding in result.findings:
        print(f"  {finding}")
    print(
        f"soak: minutes={args.minutes:g} redis_used_mb={samples[-1].redis_used_mb:.1f}"
        f" {result.summary()} rss_growth_mb={max(growth.values()):.1f}"
    )
    wrong = result.lost or result.double_called or result.stuck or result.miscounted
    return 1 if wrong or grown else 0


def stack_config(model_root: Path, workdir: Path, faults: bool) -> StackConfig:
    """The soak's stack; with `faults`, its functions reach S3 and the Lambda through fault
    proxies and run with FAULT_ENV."""
    return StackConfig(
        model_root=model_root,
        workdir=workdir,
        fault_proxies=faults,
        extra_env=FAULT_ENV if faults else {},
    )


def main() -> int:
    args = parse_args()
    root = model_root_or_test_pack(args.model_root)
    workdir = ROOT / "var" / f"soak-{int(time.time())}"
    config = stack_config(root, workdir, args.faults)
    print(
        f"starting the local stack; then {args.rate:g} photos/s for {args.minutes:g} min,"
        f" {args.users} users in turn{', with faults' if args.faults else ''}; logs in {workdir}"
    )
    try:
        with LocalStack(config) as stack:
            return run(stack, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
