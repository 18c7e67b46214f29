"""`make loadtest`: the UAT's load on this machine, and whether a small uploader is served fairly.

On one local stack (scripts/demo.py's uploads, webhooks, progress and table):
1. alone: a small user uploads `--small-photos` photos with nothing else going on, the
   baseline of their wait; `--alone-runs` times, as as many users, the median taken (one run's
   wait is a few tenths of a second, which a passing hiccup of this shared machine doubles);
2. mixed: `--users` - 1 users upload `--photos` photos each, all at once; while their
   backlog is high (each has `--backlog` photos waiting, or has finished uploading), another
   small user uploads the same photos again.
Every user uploads one photo after another, `--pace` photos a second (B2 takes one upload at
a time per user; 4/s is twice the UAT's pace, so that the large uploads outrun this machine
and their backlog builds); `--pace 0`: as fast as this machine takes them.

The last line sums it up:

    loadtest: users=… photos=… lost=… thumbs_p95_s=… embeds_p95_s=… small_user_thumbs_s=…
        fairness=…

users and photos of the mixed phase; lost over both phases; the p95 of each photo's seconds
from its webhook to the database Lambda's call for it, per stage, in the mixed phase;
small_user_thumbs_s the small user's seconds from the end of their upload to their last
thumbnail in the mixed phase, and fairness that over the median of the same seconds when they
were alone.
Exit status 1 when a photo is lost or fairness is over `--max-fairness`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass

from devstack.stack import ROOT, LocalStack, StackConfig, fetch_status, model_root_or_test_pack
from functions.common.pipeline import PIPELINE
from functions.status.overview import percentile
from scripts import demo

SMALL_USER = "small"
# The small user's ten photos uploaded alone first, as another user (its counts start at zero).
ALONE_USER = "solo"
THUMBNAIL, EMBED = PIPELINE["thumbnail"], PIPELINE["embed"]


@dataclass(frozen=True)
class Phase:
    """One phase's uploads (the small user's last), their last statuses, the database Lambda's
    calls so far and the photos lost in it."""

    uploads: list[demo.Upload]
    statuses: dict[str, dict]
    lambda_calls: list[dict]
    lost: int

    @property
    def small(self) -> demo.Upload:
        return self.uploads[-1]

    def small_user_thumbs_s(self) -> float:
        """The small user's seconds from the end of their upload to their last thumbnail."""
        first = PIPELINE.stages[0]
        return demo.seconds_to(first.finished_at, self.small, self.statuses[self.small.user_id])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5, help="users, the small one included")
    parser.add_argument("--photos", type=int, default=200, help="photos per large upload")
    parser.add_argument("--small-photos", type=int, default=10, help="the small user's photos")
    parser.add_argument(
        "--backlog",
        type=int,
        help="photos each large uploader has waiting when the small user starts "
        "(default: half of --photos)",
    )
    parser.add_argument("--pace", type=float, default=4.0, help="photos/s per user; 0: unpaced")
    parser.add_argument("--alone-runs", type=int, default=3, help="baseline runs (median)")
    parser.add_argument("--max-fairness", type=float, default=1.5)
    parser.add_argument("--user-prefix", default="", help="put before every user id")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per phase")
    demo.add_model_root(parser)
    args = parser.parse_args(argv)
    if args.users < 2:
        parser.error("--users must be at least 2: large uploaders and the small one")
    return args


def uploads_for(users: list[str], photos: int) -> list[demo.Upload]:
    """Each user's upload of `photos` sample photos; the same photos for every user index 0."""
    shape = argparse.Namespace(photos=photos, photos_dir=None, corrupt=0)
    return [demo.Upload(user, demo.photos_for(user, shape, 0)) for user in users]


def start_uploads(
    stack: LocalStack, uploads: list[demo.Upload], pace: float
) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=demo.upload_all, args=(stack, upload, pace or None))
        for upload in uploads
    ]
    for thread in threads:
        thread.start()
    return threads


def settle(
    stack: LocalStack, uploads: list[demo.Upload], threads: list[threading.Thread], timeout_s: float
) -> Phase:
    """Show the uploads' progress until they settled, then their table."""
    statuses, lanes = demo.watch(stack, uploads, timeout_s)
    for thread in threads:
        thread.join()
    calls = demo.lambda_invocations(stack)
    return Phase(uploads, statuses, calls, demo.summarize(uploads, statuses, calls, lanes))


def wait_for_backlog(
    stack: LocalStack, large: list[demo.Upload], backlog: int, timeout_s: float
) -> list[int]:
    """Until every large uploader has `backlog` photos waiting at some stage, or has finished
    uploading; their backlogs then."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = [pending(fetch_status(stack, upload.user_id)) for upload in large]
        ready = zip(waiting, large, strict=True)
        if all(n >= backlog or u.finished_at is not None for n, u in ready) or (
            time.monotonic() > deadline
        ):
            return waiting
        time.sleep(0.2)


def pending(status: dict) -> int:
    """The user's photos waiting for any stage."""
    return sum(status["counts"][stage.pending_counter] for stage in PIPELINE)


def fairness(alone: list[Phase], mixed: Phase) -> float:
    """The small user's wait for thumbnails among the large uploads over their median wait
    alone."""
    alone_s = statistics.median(phase.small_user_thumbs_s() for phase in alone)
    return mixed.small_user_thumbs_s() / max(alone_s, 0.01)


def summary_line(alone: list[Phase], mixed: Phase) -> str:
    seconds = demo.webhook_to_lambda_s(mixed.uploads, mixed.lambda_calls)
    thumbs, embeds = seconds[THUMBNAIL.name], seconds[EMBED.name]
    fields = {
        "users": len(mixed.uploads),
        "photos": sum(len(u.photos) for u in mixed.uploads),
        "lost": sum(phase.lost for phase in alone) + mixed.lost,
        "thumbs_p95_s": f"{percentile(thumbs, 95):.2f}",
        "embeds_p95_s": f"{percentile(embeds, 95):.2f}",
        "small_user_thumbs_s": f"{mixed.small_user_thumbs_s():.2f}",
        "fairness": f"{fairness(alone, mixed):.2f}",
    }
    return "loadtest: " + " ".join(f"{key}={value}" for key, value in fields.items())


def run(stack: LocalStack, args: argparse.Namespace) -> int:
    prefix = args.user_prefix
    alone = []
    for run_index in range(args.alone_runs):
        alone_user = f"{prefix}{ALONE_USER}{run_index + 1}"
        print(f"alone: {alone_user} uploads {args.small_photos} photos, nothing else going on")
        solo = uploads_for([alone_user], args.small_photos)
        alone.append(settle(stack, solo, start_uploads(stack, solo, args.pace), args.timeout))

    backlog = args.backlog or max(1, args.photos // 2)
    large = uploads_for([f"{prefix}user{n + 1}" for n in range(args.users - 1)], args.photos)
    print(
        f"\nmixed: {len(large)} users upload {args.photos} photos each; {SMALL_USER} uploads"
        f" {args.small_photos} once each has {backlog} waiting (or has finished uploading)"
    )
    threads = start_uploads(stack, large, args.pace)
    waiting = wait_for_backlog(stack, large, backlog, args.timeout)
    print(f"{SMALL_USER} starts: the large uploaders have {waiting} photos waiting")
    small = uploads_for([f"{prefix}{SMALL_USER}"], args.small_photos)
    threads += start_uploads(stack, small, args.pace)
    mixed = settle(stack, [*large, *small], threads, args.timeout)

    print(summary_line(alone, mixed))
    unfair = fairness(alone, mixed) > args.max_fairness
    lost = sum(phase.lost for phase in alone) + mixed.lost
    return 1 if lost or unfair else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = model_root_or_test_pack(args.model_root)
    config = StackConfig(model_root=root, workdir=ROOT / "var" / f"loadtest-{int(time.time())}")
    print("starting the local stack (redis, S3, Lambda stand-in, broker, receiver, functions)…")
    with LocalStack(config) as stack:
        print(f"logs in {config.workdir}\n")
        return run(stack, args)


if __name__ == "__main__":
    sys.exit(main())
