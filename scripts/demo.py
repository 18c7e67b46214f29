"""`make demo`: the whole pipeline on this machine, several users uploading at once.

Starts the local stack, uploads photos for each user in parallel (one after another per user,
as the app does), delivers a signed B2 webhook for each upload exactly as B2 would, shows live
progress per user by polling the status function, and ends with a per-user table. The bars
and the table show each user's photos per lane (functions/common/lanes.py), counted by the
local broker's Triggers. Exit status 1 when any photo is unaccounted for.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devstack import b2_sender
from devstack.sample_photos import sample_photo
from devstack.stack import ROOT, LocalStack, StackConfig, fetch_status, model_root_or_test_pack
from functions.common.config import ReceiverSettings
from functions.common.lanes import Lane, service_name
from functions.common.pipeline import IDLE_PHASE, PIPELINE
from functions.status.overview import percentile
from scripts.compose_stack import ComposeStack

BAR_WIDTH = 24
# A stage's bar: its photos done in the interactive lane, then in the bulk lane, then waiting.
LANE_MARKS = {Lane.INTERACTIVE: "█", Lane.BULK: "▓"}
WAITING_MARK = "·"
# The broker's deliveries per Trigger and user (GET /stats); None where it is not reachable.
LaneCounts = dict[str, dict[str, Any]] | None


@dataclass
class Photo:
    key: str
    data: bytes
    faces_drawn: int | None
    webhook_sent_at: float | None = None  # set once the receiver has taken it


@dataclass
class Upload:
    user_id: str
    photos: list[Photo]
    finished_at: float | None = None
    errors: list[str] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3, help="users uploading in parallel")
    parser.add_argument("--photos", type=int, default=8, help="photos per user")
    parser.add_argument(
        "--photos-dir",
        type=Path,
        help="upload your own photos (every user, each file under its own name)",
    )
    parser.add_argument(
        "--user-prefix", default="user", help="user ids are this followed by 1, 2, …"
    )
    parser.add_argument("--corrupt", type=int, default=0, help="corrupt photos added per user")
    add_model_root(parser)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the end")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument(
        "--compose",
        action="store_true",
        help="run against docker-compose.yml, the stack in containers (make demo-compose)",
    )
    return parser.parse_args()


def add_model_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-root",
        type=Path,
        default=ROOT / "var" / "models",
        help="folder holding <pack>/ with the real insightface pack",
    )


def photos_for(user_id: str, args: argparse.Namespace, user_index: int) -> list[Photo]:
    if args.photos_dir:
        processed = ReceiverSettings.from_env().image_extensions
        files = sorted(
            p for p in args.photos_dir.iterdir() if p.suffix.lower().lstrip(".") in processed
        )
        photos = [Photo(f"{user_id}/photos/{p.name}", p.read_bytes(), None) for p in files]
    else:
        photos = []
        for index in range(args.photos):
            faces = (index + user_index) % 4
            orientation = (1, 6, 3, 8)[index % 4]
            data = sample_photo(
                seed=user_index * 1000 + index, faces=faces, orientation=orientation
            )
            photos.append(Photo(f"{user_id}/photos/IMG_{index:04d}.jpg", data, faces))
    photos += [
        Photo(f"{user_id}/photos/BROKEN_{i}.jpg", b"\xff\xd8\xff\xe0 not a photo", 0)
        for i in range(args.corrupt)
    ]
    return photos


def upload_all(stack: LocalStack, upload: Upload, pace: float | None = None) -> None:
    """Declare the upload as the app's front end does, then upload one photo after another,
    `pace` photos a second at most (unpaced: as fast as they go)."""
    s3 = stack.s3()
    try:
        requests.post(
            f"{stack.urls['status']}/v1/uploads",
            json={"expected": len(upload.photos)},
            headers=stack.auth_headers(upload.user_id),
            timeout=5,
        ).raise_for_status()
    except requests.RequestException as exc:  # optional: the photos are counted regardless
        print(f"{upload.user_id}: declaring the upload failed: {exc}")
    started = time.monotonic()
    for index, photo in enumerate(upload.photos):
        if pace:
            time.sleep(max(0.0, started + index / pace - time.monotonic()))
        upload_photo(stack, s3, upload, photo)
    upload.finished_at = time.time()


def upload_photo(stack: LocalStack, s3: Any, upload: Upload, photo: Photo) -> None:
    """Put one photo in the bucket and deliver B2's signed webhook for it, as B2 would."""
    try:
        event = put_photo(stack, s3, photo)
        sent_at = time.time()
        deliver_webhook(stack, [event])
        photo.webhook_sent_at = sent_at
    except Exception as exc:  # every lost upload is reported instead of stopping the run
        upload.errors.append(f"{photo.key}: {exc}")


def put_photo(stack: LocalStack, s3: Any, photo: Photo) -> dict[str, Any]:
    """Put the photo in the bucket; B2's event for the version stored."""
    bucket = stack.config.bucket
    stored = s3.put_object(Bucket=bucket, Key=photo.key, Body=photo.data)
    return b2_sender.object_created(bucket, photo.key, len(photo.data), stored["VersionId"])


def deliver_webhook(stack: LocalStack, events: list[dict[str, Any]]) -> None:
    """B2's signed notification of `events`, redelivered until the receiver takes it."""
    url, secret = stack.urls["receiver"], stack.config.webhook_secret
    b2_sender.deliver_until_taken(url, events, secret).raise_for_status()


def bar(done: int, total: int, interactive: int | None = None) -> str:
    """`done` of `total`, the first `interactive` of them (all, when unknown) marked as done in
    the interactive lane and the rest as done in the bulk lane."""
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    fast = filled if interactive is None else BAR_WIDTH * min(interactive, done) // max(total, 1)
    marks = LANE_MARKS[Lane.INTERACTIVE] * fast + LANE_MARKS[Lane.BULK] * (filled - fast)
    return marks + WAITING_MARK * (BAR_WIDTH - filled)


def fetch_lanes(stack: Any) -> LaneCounts:
    """The local broker's Trigger counts; None where the stack does not publish its broker."""
    if "broker" not in stack.urls:
        return None
    return requests.get(f"{stack.urls['broker']}/stats", timeout=5).json()["triggers"]


def lane_photos(lanes: LaneCounts, stage: str, lane: Lane, user_id: str) -> int | None:
    """The user's photos that `stage` finished in `lane` (its Trigger's deliveries)."""
    if lanes is None:
        return None
    trigger = lanes.get(service_name(stage, lane), {})
    return trigger.get("delivered_by_user", {}).get(user_id, 0)


def legend() -> str:
    lanes = "  ".join(f"{mark} done, {lane} lane" for lane, mark in LANE_MARKS.items())
    return f"{lanes}  {WAITING_MARK} waiting"


def render(uploads: list[Upload], statuses: dict[str, dict], lanes: LaneCounts = None) -> list[str]:
    """A line per user: a progress bar per stage, then the status function's message.

    A stage expects the photos that no stage before it failed."""
    lines = []
    for upload in uploads:
        status = statuses.get(upload.user_id, {})
        counts = status.get("counts", {})
        expected = len(upload.photos)
        line = f"{upload.user_id:8}"
        for stage in PIPELINE:
            failed = counts.get(stage.failed_counter, 0)
            finished = counts.get(stage.done_counter, 0) + failed
            fast = lane_photos(lanes, stage.name, Lane.INTERACTIVE, upload.user_id)
            progress = bar(finished, expected, fast)
            line += f" {stage.counted_as} {progress} {finished:4}/{expected:<4}"
            expected -= failed
        message = status.get("message") or ("done" if is_settled(upload, status) else "uploading")
        lines.append(f"{line} {message}")
    return lines


def ended(counts: dict[str, int]) -> int:
    """Photos whose way through the pipeline has ended: done with the last stage, or failed at
    any stage."""
    last_done = counts[PIPELINE.stages[-1].done_counter]
    return last_done + sum(counts[stage.failed_counter] for stage in PIPELINE)


def is_settled(upload: Upload, status: dict) -> bool:
    """The user's photos all passed through the first stage (the others follow while the
    phase is not idle)."""
    if upload.finished_at is None or not status:
        return False
    counts, first = status["counts"], PIPELINE.stages[0]
    accounted = counts[first.done_counter] + counts[first.failed_counter]
    return status["phase"] == IDLE_PHASE and accounted >= len(upload.photos) - len(upload.errors)


def watch(
    stack: LocalStack, uploads: list[Upload], timeout_s: float
) -> tuple[dict[str, dict], LaneCounts]:
    """Show progress until every user's photos have settled; their last statuses and lanes."""
    tty = sys.stdout.isatty()
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, dict] = {}
    last_print = 0.0
    print(legend())
    while True:
        try:
            statuses = {u.user_id: fetch_status(stack, u.user_id) for u in uploads}
            lanes = fetch_lanes(stack)
        except requests.RequestException as exc:  # a passing fault; the front end polls on too
            if time.monotonic() > deadline:
                raise TimeoutError(f"no status answer before the deadline: {exc}") from exc
            print(f"status poll failed, retrying: {exc}", flush=True)
            time.sleep(1)
            continue
        lines = render(uploads, statuses, lanes)
        done = all(is_settled(u, statuses[u.user_id]) for u in uploads)
        if tty:
            print("\n".join(lines) + (f"\x1b[{len(lines)}F" if not done else ""), flush=True)
        elif done or time.monotonic() - last_print > 5:
            print("\n".join(lines) + "\n", flush=True)
            last_print = time.monotonic()
        if done or time.monotonic() > deadline:
            return statuses, lanes
        time.sleep(0.25)


def summary_columns() -> list[str]:
    """The summary's headers after the user's: photos per lane at the first stage, per stage
    its done count, and the seconds from the end of the upload to its last completion."""
    done = [stage.counted_as for stage in PIPELINE]
    seconds = [f"→{stage.counted_as} s" for stage in PIPELINE]
    lanes = [str(lane) for lane in Lane]
    return ["photos", *lanes, *done, "faces", "drawn", "failed", "lost", *seconds]


def table_row(user: str, cells: list[Any]) -> str:
    """A row of the summary: the user, then each cell right-aligned under its column's header."""
    row = [
        f"{cell:>{len(header)}.2f}" if isinstance(cell, float) else f"{cell:>{len(header)}}"
        for cell, header in zip(cells, summary_columns(), strict=True)
    ]
    return f"{user:8} " + " ".join(row)


def seconds_to(stage_finished_at: str, upload: Upload, status: dict) -> float:
    """Seconds from the end of the user's upload to the stage's last completion for them;
    infinite when the stage completed none of their photos."""
    assert upload.finished_at is not None
    finished = status["timestamps"].get(stage_finished_at)
    return math.inf if finished is None else max(0.0, finished - upload.finished_at)


def summarize(
    uploads: list[Upload], statuses: dict[str, dict], lambda_calls: list, lanes: LaneCounts = None
) -> int:
    """Print the per-user table and the demo's last line; the photos lost."""
    header = table_row("user", summary_columns())
    print("\n" + header + "\n" + "-" * len(header))
    photos = failed = lost = 0
    done = dict.fromkeys(PIPELINE.names, 0)
    for upload in uploads:
        status = statuses[upload.user_id]
        counts = status["counts"]
        user_done = [counts[stage.done_counter] for stage in PIPELINE]
        user_failed = sum(counts[stage.failed_counter] for stage in PIPELINE)
        user_lost = len(upload.photos) - ended(counts)
        drawn = sum(p.faces_drawn or 0 for p in upload.photos)
        to_stage = [seconds_to(stage.finished_at, upload, status) for stage in PIPELINE]
        first = PIPELINE.stages[0].name
        per_lane = [lane_photos(lanes, first, lane, upload.user_id) for lane in Lane]
        per_lane_cells = ["-" if n is None else n for n in per_lane]
        cells = [len(upload.photos), *per_lane_cells, *user_done, counts["faces"], drawn]
        cells += [user_failed, user_lost]
        print(table_row(upload.user_id, [*cells, *to_stage]))
        for error in upload.errors:
            print(f"  upload error: {error}")
        for failure in status["failures"]:
            print(f"  failed: {failure['photo_id']} ({failure['reason']}: {failure['detail']})")
        photos += len(upload.photos)
        for stage, stage_done in zip(PIPELINE, user_done, strict=True):
            done[stage.name] += stage_done
        failed += user_failed
        lost += user_lost
    print(f"\ndatabase Lambda stand-in received {len(lambda_calls)} invocations")
    print(per_photo_latency(uploads, lambda_calls))
    stages = ", ".join(f"{done[stage.name]}/{photos} {stage.counted_as}" for stage in PIPELINE)
    print(f"demo: {stages}, {failed} failed, {lost} lost")
    return lost


def webhook_to_lambda_s(uploads: list[Upload], lambda_calls: list[dict]) -> dict[str, list[float]]:
    """Per stage, the sorted seconds from each photo's webhook to the database Lambda's call
    for it (the stage's reply event is what the Lambda is called for)."""
    called = {
        (call["payload"].get("event"), call["payload"].get("key")): call["at"]
        for call in reversed(lambda_calls)  # the first call for a photo wins
        if isinstance(call["payload"], dict)
    }
    return {
        stage.name: sorted(
            called[stage.created, photo.key] - photo.webhook_sent_at
            for upload in uploads
            for photo in upload.photos
            if photo.webhook_sent_at is not None and (stage.created, photo.key) in called
        )
        for stage in PIPELINE
    }


def per_photo_latency(uploads: list[Upload], lambda_calls: list[dict]) -> str:
    """Seconds from each photo's webhook to the database Lambda's call for it, per stage."""
    parts = []
    for stage_name, seconds in webhook_to_lambda_s(uploads, lambda_calls).items():
        stage = PIPELINE[stage_name]
        if seconds:
            p50, p95 = percentile(seconds, 50), percentile(seconds, 95)
            parts.append(
                f"{stage.counted_as} p50 {p50:.2f} s, p95 {p95:.2f} s, max {seconds[-1]:.2f} s"
            )
    return "per photo, webhook to database Lambda: " + ("; ".join(parts) or "none")


def main() -> int:
    args = parse_args()
    root = model_root_or_test_pack(args.model_root)
    name = "demo-compose" if args.compose else "demo"
    config = StackConfig(model_root=root, workdir=ROOT / "var" / f"{name}-{int(time.time())}")
    if args.compose:
        print("starting docker-compose.yml from the images (make images builds what changed)…")
    else:
        print("starting the local stack (redis, S3, Lambda stand-in, broker, receiver, functions)…")
    stack_type = ComposeStack if args.compose else LocalStack
    try:
        with stack_type(config) as stack:
            return run(stack, args)
    except KeyboardInterrupt:
        return 130


def run(stack: LocalStack, args: argparse.Namespace) -> int:
    uploads = [Upload(f"{args.user_prefix}{i + 1}", []) for i in range(args.users)]
    for index, upload in enumerate(uploads):
        upload.photos = photos_for(upload.user_id, args, index)
    print(
        f"{args.users} users uploading {sum(len(u.photos) for u in uploads)} photos"
        f" in parallel; logs in {stack.config.workdir}\n"
    )
    threads = [threading.Thread(target=upload_all, args=(stack, u)) for u in uploads]
    for thread in threads:
        thread.start()
    statuses, lanes = watch(stack, uploads, args.timeout)
    for thread in threads:
        thread.join()
    lost = summarize(uploads, statuses, lambda_invocations(stack), lanes)
    if args.keep:
        print("\nstack left running (Ctrl-C to stop):")
        for name, url in stack.urls.items():
            print(f"  {name:10} {url}")
        threading.Event().wait()
    return 1 if lost else 0


def lambda_invocations(stack: Any) -> list[dict]:
    """Every call the database Lambda stand-in received, with when."""
    return requests.get(f"{stack.urls['lambda']}/_invocations", timeout=5).json()


if __name__ == "__main__":
    sys.exit(main())
