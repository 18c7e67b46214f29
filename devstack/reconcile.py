"""What became of every uploaded photo, told by the three places that record it: the bucket
(its thumbnail), the database Lambda's invocations (one per photo version and stage), and the
status store (each photo's state, and the counters users see). The soak's last word.

- `lost`: a photo with no status record, or one whose recorded outcome left no trace where it
  should have (a thumbnail done but no thumbnail in the bucket, or no Lambda call for it);
- `double_called`: Lambda invocations for a photo version and stage beyond the first;
- `stuck`: a photo not yet at its final state (done at the last stage, or failed);
- `miscounted`: how far a user's counters are from what their photos' states add up to.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import redis
import requests

from devstack.stack import LocalStack, fetch_status
from functions.common.events import PhotoRef
from functions.common.photo_store import user_keys
from functions.common.pipeline import PIPELINE
from functions.thumbnail.app import STAGE as THUMBNAIL
from functions.thumbnail.service import thumbnail_key
from functions.thumbnail.settings import ThumbnailSettings

FAILED = frozenset(stage.failed for stage in PIPELINE)
LAST_DONE = PIPELINE.stages[-1].done


@dataclass(frozen=True)
class Evidence:
    states: dict[str, dict[str, str]]  # user -> photo id -> state (`photos:{user}`)
    counts: dict[str, dict[str, int]]  # user -> lifetime counts, as the status API shows them
    thumbnails: frozenset[str]  # keys of the thumbnails in the bucket
    invocations: list[dict[str, Any]]  # the Lambda stand-in's log: payload and time of each


@dataclass(frozen=True)
class Reconciliation:
    miscounted: int
    photos: int
    thumbnails: int
    embeddings: int
    failed: int
    lost: int
    double_called: int
    stuck: int
    findings: tuple[str, ...]  # one line per photo lost, stuck or called twice, per miscount

    def summary(self) -> str:
        """`miscounted=… photos=… … stuck=…`, in that order."""
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)[:-1])


def reconcile(
    photos: list[PhotoRef], evidence: Evidence, thumbnail_template: str
) -> Reconciliation:
    """Each uploaded photo against the evidence; the thumbnail function names thumbnails with
    `thumbnail_template` (THUMBNAIL_KEY_TEMPLATE)."""
    states = {pid: state for user in evidence.states.values() for pid, state in user.items()}
    calls = _calls_by_photo(evidence.invocations, {photo.photo_id for photo in photos})
    findings: list[str] = []
    lost = 0
    for photo in photos:
        thumbnail = thumbnail_key(thumbnail_template, photo)
        missing = _missing(photo, states.get(photo.photo_id), calls, thumbnail, evidence)
        if missing:
            lost += 1
            findings.append(f"lost: {photo.photo_id}: {missing}")
    reached = Counter(states.get(photo.photo_id) for photo in photos)
    stuck = [
        photo.photo_id
        for photo in photos
        if photo.photo_id in states and not PIPELINE.is_final(states[photo.photo_id])
    ]
    findings += [f"stuck: {pid} is still {states[pid]}" for pid in stuck]
    double = {called: at for called, at in calls.items() if len(at) > 1}
    findings += [
        f"double call: {pid} {event} x{len(at)} at {', '.join(map(clock, at))}"
        for (pid, event), at in double.items()
    ]
    miscounts = [line for user in evidence.states for line in _miscounts(user, evidence)]
    return Reconciliation(
        miscounted=sum(off for off, _ in miscounts),
        photos=len(photos),
        thumbnails=sum(n for state, n in reached.items() if _thumbnail_made(state)),
        embeddings=reached[LAST_DONE],
        failed=sum(reached[state] for state in FAILED),
        lost=lost,
        double_called=sum(len(at) - 1 for at in double.values()),
        stuck=len(stuck),
        findings=(*findings, *(line for _, line in miscounts)),
    )


def _calls_by_photo(
    invocations: Iterable[dict[str, Any]], photo_ids: set[str]
) -> dict[tuple[str, str], list[float]]:
    """When the Lambda was called for each of `photo_ids` and event, in call order; calls
    about anything else (another run on the same stack) are not this run's."""
    calls: dict[tuple[str, str], list[float]] = defaultdict(list)
    for call in invocations:
        payload = call["payload"]
        try:
            photo_id = PhotoRef.from_data(payload).photo_id
        except TypeError:
            continue
        if photo_id in photo_ids:
            calls[photo_id, payload["event"]].append(call["at"])
    return calls


def _missing(
    photo: PhotoRef,
    state: str | None,
    calls: dict[tuple[str, str], list[float]],
    thumbnail: str,
    evidence: Evidence,
) -> str:
    """What the photo's state says happened but left no trace; '' when nothing."""
    if state is None:
        return "no status record"
    # Each stage a photo went through called the Lambda with its reply's type.
    made = [stage.created for stage in PIPELINE.succeeded(state)]
    missing = [f"no {event} call" for event in made if (photo.photo_id, event) not in calls]
    if _thumbnail_made(state) and thumbnail not in evidence.thumbnails:
        missing.insert(0, f"no {thumbnail} in the bucket")
    return f"{state}, but " + " and ".join(missing) if missing else ""


def _miscounts(user: str, evidence: Evidence) -> list[tuple[int, str]]:
    """Each counter of the user's that differs from their photos' states: by how much, and a
    line saying so."""
    reached = Counter(evidence.states[user].values())
    expected = {"uploaded": sum(reached.values())}
    for stage in PIPELINE:
        expected[stage.done_counter] = sum(
            n for state, n in reached.items() if stage in PIPELINE.succeeded(state)
        )
        expected[stage.failed_counter] = reached[stage.failed]
    counts = evidence.counts[user]
    return [
        (
            abs(counts[name] - want),
            f"miscounted: {user} {name} is {counts[name]}, states say {want}",
        )
        for name, want in expected.items()
        if counts[name] != want
    ]


def _thumbnail_made(state: str | None) -> bool:
    return state is not None and THUMBNAIL in PIPELINE.succeeded(state)


def clock(at: float) -> str:
    """A wall-clock time (time.time()) as HH:MM:SS.s, local time."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 10) % 10}"


def gather(stack: LocalStack, users: list[str], invocations: list[dict[str, Any]]) -> Evidence:
    """The users' counters (from the status API, as they see them) and photos' states (from
    Redis), and the thumbnails in the bucket (listed from the S3 server directly)."""
    store = redis.Redis.from_url(stack.urls["redis"], decode_responses=True)
    prefix = ThumbnailSettings.from_env().key_prefix
    pages = (
        stack.s3()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=stack.config.bucket, Prefix=prefix)
    )
    return Evidence(
        counts={user: fetch_status(stack, user)["counts"] for user in users},
        states={user: store.hgetall(user_keys(user)[0]) for user in users},
        thumbnails=frozenset(item["Key"] for page in pages for item in page.get("Contents", ())),
        invocations=invocations,
    )


def lambda_invocations(stack: LocalStack) -> list[dict[str, Any]]:
    """Every invocation the Lambda stand-in recorded."""
    return requests.get(f"{stack.urls['lambda']}/_invocations", timeout=10).json()
