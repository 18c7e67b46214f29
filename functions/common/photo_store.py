"""The photo store: each photo's way through the stages in Redis, counted exactly once per
photo and stage. The stages and the receiver write through `PhotoStore` (claim a photo,
give the claim back, record where the photo is now); the status function reads what it wrote
through `StatusReader` (functions/status/status_reader.py).

The key layout, written here and read there. Per user (the `{user_id}` hash tag puts one
user's keys in one slot, so each script touches a single slot and the layout is ready for
Redis Cluster; the client today is a plain single-endpoint `redis.Redis`, which is what the
deployment runs):
- `photos:{user}`: hash photo_id -> the photo's state (a `PhotoState`: `uploaded`,
  `thumbnail`, `thumbnail_failed`, `embedding`, `embedding_failed`); a state is only entered
  from an earlier one, so a duplicate or late delivery never counts twice.
- `user:{user}`: hash of lifetime counters, timestamps and the current run (`run_*` fields),
  read by the status function in one round trip with the two lists below.
- `failures:{user}`: newest failures first (JSON), capped.
- `completions:{user}`: times of the current run's newest stage completions, for the ETA.
- `queue:{user}:thumbnail`, `queue:{user}:embed`: photos waiting for each stage, scored by
  the time they started waiting (the backlog and its oldest age).
- `swept:{user}`, `finished:{user}`: photos the sweeper failed, and finished photos by when
  they finished (for the retention).
- `reply:{user}:<stage>:<photo>`, `lease:...`, `attempts:...`: one photo's reply, claim and
  attempts at one stage.

Shared by every user, written by separate commands so no script crosses slots:
- `active_users`: sorted set user -> time of the latest activity (the admin's user list).
- `samples:{stage}`: recent stage completions (time, duration, failure reason), the sliding
  window behind the admin API's throughput, latency percentiles and error rates.
- `thresholds`: the admin's acceptable delays (functions/status/admin_store.py).

What a run is: functions/common/status_model.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from functions.common.config import STAGES, StatusSettings
from functions.common.logs import photo_context
from functions.common.redis_client import connect, unavailable_as_transient
from functions.common.status_model import StageSample
from functions.common.telemetry import tracer

log = logging.getLogger(__name__)

ACTIVE_USERS = "active_users"
SWEEP_LOCK = "sweeper_lock"
# Photos one sweep fails per user and stage, at most: the rest wait for the next sweep.
_SWEPT_PER_QUEUE = 1000

# The lifetime counters and timestamps in `user:{user}`; the current run's are `run_<counter>`.
COUNTERS = (
    "uploaded",
    "thumbnails_done",
    "thumbnails_failed",
    "embeddings_done",
    "embeddings_failed",
    "faces",
)
TIMESTAMPS = ("first_upload_at", "last_upload_at", "last_thumbnail_at", "last_embedding_at")


_tracer = tracer(__name__)


class PhotoState(StrEnum):
    """Where a photo is: uploaded, or done or failed at a stage (a stage is a function)."""

    UPLOADED = "uploaded"
    THUMBNAIL = "thumbnail"
    THUMBNAIL_FAILED = "thumbnail_failed"
    EMBEDDING = "embedding"
    EMBEDDING_FAILED = "embedding_failed"

    @property
    def pipeline_stage(self) -> str | None:
        """The function whose work this state ends (`thumbnail`, `embed`); None for uploads."""
        return _PIPELINE_STAGE.get(self)


_PIPELINE_STAGE = {
    PhotoState.THUMBNAIL: "thumbnail",
    PhotoState.THUMBNAIL_FAILED: "thumbnail",
    PhotoState.EMBEDDING: "embed",
    PhotoState.EMBEDDING_FAILED: "embed",
}

# The failure that ends a photo which waited too long in a stage's queue.
_TIMED_OUT_AS = {"thumbnail": PhotoState.THUMBNAIL_FAILED, "embed": PhotoState.EMBEDDING_FAILED}

# Which states a photo may be in for each transition to apply, and which counter it bumps.
_TRANSITIONS: dict[PhotoState, tuple[tuple[str, ...], str, str]] = {
    PhotoState.UPLOADED: (("",), "uploaded", "last_upload_at"),
    PhotoState.THUMBNAIL: (("", "uploaded"), "thumbnails_done", "last_thumbnail_at"),
    PhotoState.THUMBNAIL_FAILED: (("", "uploaded"), "thumbnails_failed", "last_thumbnail_at"),
    PhotoState.EMBEDDING: (("", "uploaded", "thumbnail"), "embeddings_done", "last_embedding_at"),
    PhotoState.EMBEDDING_FAILED: (
        ("", "uploaded", "thumbnail"),
        "embeddings_failed",
        "last_embedding_at",
    ),
}

# KEYS (both scripts): photos, user, completions, failures, thumbnail queue, embed queue.
# `run_finished` is RunStatus.finished in Lua: keep the two in step.
_RUN_HELPERS = """
local function run_finished(now)
  local r = redis.call('HMGET', KEYS[2], 'run_started_at', 'run_expected', 'run_expected_until',
    'run_uploaded', 'run_thumbnails_done', 'run_thumbnails_failed',
    'run_embeddings_done', 'run_embeddings_failed')
  if not r[1] then return true end
  local n = {}
  for i = 2, 8 do n[i] = tonumber(r[i]) or 0 end
  local photos = n[4]
  if n[3] >= now then photos = math.max(photos, n[2]) end
  return n[5] + n[6] >= photos and n[7] + n[8] >= n[5]
end
local function start_run(now)
  redis.call('HSET', KEYS[2], 'run_started_at', now, 'run_expected', 0, 'run_expected_until', 0,
    'run_uploaded', 0, 'run_thumbnails_done', 0, 'run_thumbnails_failed', 0,
    'run_embeddings_done', 0, 'run_embeddings_failed', 0, 'run_faces', 0)
  redis.call('DEL', KEYS[3])
end
"""

# KEYS 7-11 (record only): swept, finished, and the photo's reply, lease and attempts at the
# stage. ARGV: photo_id, new state, counter, timestamp field, timestamp, faces, failure json
# ('' if none), failures kept, completions kept, declaration ttl, reply json ('' if none),
# reply ttl, retention, '1' when the sweeper records, allowed states...
# A photo first seen past `uploaded` (its upload record was lost) still counts as uploaded,
# and one first seen at `embedding` also counts its thumbnail, so the counts stay consistent.
# A completion of a photo the sweeper failed undoes that failure (in the run's counts too,
# while the run it was swept in goes on) and counts as the completion it is.
_RECORD = (
    _RUN_HELPERS
    + """
local photo, stage, at = ARGV[1], ARGV[2], tonumber(ARGV[5])
local current = redis.call('HGET', KEYS[1], photo) or ''
local allowed = false
for i = 15, #ARGV do
  if ARGV[i] == current then allowed = true end
end
local unswept = {thumbnail_failed = 'uploaded', embedding_failed = 'thumbnail'}
local swept_in_run = redis.call('HGET', KEYS[7], photo)
if not allowed and swept_in_run and stage .. '_failed' == current then
  local counter = stage == 'thumbnail' and 'thumbnails_failed' or 'embeddings_failed'
  redis.call('HINCRBY', KEYS[2], counter, -1)
  if swept_in_run == redis.call('HGET', KEYS[2], 'run_started_at') then
    redis.call('HINCRBY', KEYS[2], 'run_' .. counter, -1)
  end
  redis.call('HDEL', KEYS[7], photo)
  redis.call('ZREM', KEYS[8], photo)
  current, allowed = unswept[current], true
end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], photo, stage)
local function bump(field, by)
  redis.call('HINCRBY', KEYS[2], field, by)
  redis.call('HINCRBY', KEYS[2], 'run_' .. field, by)
end
if current == '' then
  if run_finished(at) then start_run(at) end
  bump('uploaded', 1)
  redis.call('HSETNX', KEYS[2], 'first_upload_at', ARGV[5])
  redis.call('HSET', KEYS[2], 'last_upload_at', ARGV[5])
  local declared_until = tonumber(redis.call('HGET', KEYS[2], 'run_expected_until')) or 0
  if declared_until >= at then
    redis.call('HSET', KEYS[2], 'run_expected_until', at + tonumber(ARGV[10]))
  end
end
if stage == 'uploaded' then
  redis.call('ZADD', KEYS[5], at, photo)
else
  redis.call('ZREM', KEYS[5], photo)
  if stage == 'thumbnail' then
    redis.call('ZADD', KEYS[6], at, photo)
  elseif stage ~= 'thumbnail_failed' then
    redis.call('ZREM', KEYS[6], photo)
  end
  redis.call('LPUSH', KEYS[3], ARGV[5])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[9]) - 1)
end
if (stage == 'embedding' or stage == 'embedding_failed') and current ~= 'thumbnail' then
  bump('thumbnails_done', 1)
end
if ARGV[3] ~= 'uploaded' then bump(ARGV[3], 1) end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
if tonumber(ARGV[6]) > 0 then bump('faces', tonumber(ARGV[6])) end
if ARGV[7] ~= '' then
  redis.call('LPUSH', KEYS[4], ARGV[7])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[8]) - 1)
end
if ARGV[14] == '1' then
  redis.call('HSET', KEYS[7], photo, redis.call('HGET', KEYS[2], 'run_started_at') or '')
end
if ARGV[11] ~= '' then redis.call('SET', KEYS[9], ARGV[11], 'EX', ARGV[12]) end
redis.call('DEL', KEYS[10], KEYS[11])
local retention = tonumber(ARGV[13])
if stage ~= 'uploaded' and stage ~= 'thumbnail' then
  redis.call('ZADD', KEYS[8], at, photo)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', at - retention, 'LIMIT', 0, 16)
  for _, old in ipairs(expired) do
    redis.call('HDEL', KEYS[1], old)
    redis.call('HDEL', KEYS[7], old)
    redis.call('ZREM', KEYS[8], old)
  end
end
for _, key in ipairs({KEYS[1], KEYS[7], KEYS[8]}) do redis.call('EXPIRE', key, retention) end
return 1
"""
)

# KEYS: photos, swept, reply, lease, attempts. ARGV: photo_id, lease ms, attempts ttl, crashes
# allowed, lease token, the states the photo may be in for the stage to apply...
# One round trip before a stage touches a photo: finished already (answer with the reply sent
# then), held by another delivery, or claimed; a claim whose earlier attempts all died with
# their worker (their claims never settled) is reported with their count.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local pending = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
for i = 6, #ARGV do
  if ARGV[i] == state then pending = true end
end
if not pending then return {'finished', redis.call('GET', KEYS[3]) or ''} end
if not redis.call('SET', KEYS[4], ARGV[5], 'NX', 'PX', ARGV[2]) then return {'busy', ''} end
local crashes = redis.call('INCR', KEYS[5]) - 1
redis.call('EXPIRE', KEYS[5], ARGV[3])
if crashes >= tonumber(ARGV[4]) then return {'crashed', tostring(crashes)} end
return {'claimed', tostring(crashes)}
"""

# KEYS: lease, attempts. ARGV: lease token. An attempt that ended without recording (a
# transient failure) gives its claim back and does not count as a crash.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if (tonumber(redis.call('GET', KEYS[2])) or 0) > 0 then redis.call('DECR', KEYS[2]) end
"""

# ARGV: photos expected, now, declaration ttl. A declaration adds to the current run's
# expected photos (or starts a run); it holds the run open until the photos arrive or it
# expires, `ttl` after the declaration or the latest arrival.
_DECLARE = (
    _RUN_HELPERS
    + """
local now = tonumber(ARGV[2])
if run_finished(now) then start_run(now) end
local r = redis.call('HMGET', KEYS[2], 'run_expected', 'run_expected_until', 'run_uploaded')
local expected = tonumber(r[1]) or 0
if (tonumber(r[2]) or 0) < now then expected = 0 end
local total = math.max(expected, tonumber(r[3]) or 0) + tonumber(ARGV[1])
redis.call('HSET', KEYS[2], 'run_expected', total, 'run_expected_until', now + tonumber(ARGV[3]))
return total
"""
)


def user_keys(user_id: str) -> list[str]:
    """One user's keys: photos, user, completions, failures, then a queue per stage."""
    tag = f"{{{user_id}}}"
    return [
        f"photos:{tag}",
        f"user:{tag}",
        f"completions:{tag}",
        f"failures:{tag}",
        *(f"queue:{tag}:{stage}" for stage in STAGES),
    ]


def _record_keys(user_id: str) -> list[str]:
    """The user's keys that recording reads besides `user_keys`: photos the sweeper failed
    (with the run they were swept in), and finished photos by when they finished."""
    tag = f"{{{user_id}}}"
    return [f"swept:{tag}", f"finished:{tag}"]


def _attempt_keys(user_id: str, photo_id: str, stage: str) -> list[str]:
    """One photo's keys at one stage: the reply the stage sent, its lease, its attempts."""
    suffix = f"{{{user_id}}}:{stage}:{photo_id}"
    return [f"reply:{suffix}", f"lease:{suffix}", f"attempts:{suffix}"]


def samples_key(stage: str) -> str:
    return f"samples:{stage}"


def _encode_sample(sample: StageSample) -> str:
    # A random suffix keeps equal samples distinct members of the sorted set.
    duration = "" if sample.duration_ms is None else f"{sample.duration_ms:.1f}"
    return f"{sample.at:.3f}|{duration}|{sample.reason or ''}|{os.urandom(4).hex()}"


def decode_sample(member: str) -> StageSample:
    at, duration, reason, _ = member.split("|", 3)
    return StageSample(float(at), float(duration) if duration else None, reason or None)


@dataclass(frozen=True)
class Claim:
    """What a stage may do with a delivered photo: `claimed` (process it; `crashes` earlier
    attempts died with their worker), `finished` (it did already: answer with `reply`, the
    reply event sent then, when still kept), `busy` (another delivery holds it) or `crashed`
    (the attempts allowed all died with their worker: fail it)."""

    outcome: str
    token: str
    reply: dict[str, Any] | None = None
    crashes: int = 0


class PhotoStore:
    """The writer: claims, releases and records photo states (the stages, the receiver, the
    status function's dead-letter sink), declares uploads and sweeps overdue photos."""

    def __init__(self, client: redis.Redis, settings: StatusSettings | None = None) -> None:
        self._redis = client
        self._settings = settings or StatusSettings()
        self._record = client.register_script(_RECORD)
        self._declare = client.register_script(_DECLARE)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_settings(cls, settings: StatusSettings) -> PhotoStore:
        return cls(connect(settings.redis_url), settings)

    @property
    def client(self) -> redis.Redis:
        """The Redis client, for the status function's readers over the same connections."""
        return self._redis

    @property
    def settings(self) -> StatusSettings:
        return self._settings

    def record(
        self,
        user_id: str,
        photo_id: str,
        state: PhotoState,
        *,
        faces: int = 0,
        reason: str | None = None,
        detail: str = "",
        at: float | None = None,
        duration_ms: float | None = None,
        reply: dict[str, Any] | None = None,
        swept: bool = False,
    ) -> bool:
        """Move a photo to `state`; False when it was already there or beyond (a duplicate).

        A transition that applied also adds a sample to its stage's window, so throughput and
        latency count each photo once per stage, stores the stage's `reply` (what a duplicate
        delivery is answered with) and ends the stage's claim on the photo. `swept`: the
        sweeper records a `timed_out` failure, which a later completion undoes.
        """
        allowed, counter, timestamp_field = _TRANSITIONS[state]
        at = time.time() if at is None else at
        failure = ""
        if reason is not None:
            failure = json.dumps(
                {
                    "photo_id": photo_id,
                    "stage": state.value,
                    "reason": reason,
                    "detail": detail[:300],
                    "at": at,
                }
            )
        args = [
            photo_id,
            state.value,
            counter,
            timestamp_field,
            repr(at),
            faces,
            failure,
            self._settings.failures_kept,
            self._settings.eta_completions + 1,
            self._settings.upload_declaration_ttl_s,
            "" if reply is None else json.dumps(reply, separators=(",", ":")),
            int(self._settings.reply_ttl_s),
            int(self._settings.retention_s),
            "1" if swept else "",
            *allowed,
        ]
        keys = [
            *user_keys(user_id),
            *_record_keys(user_id),
            *_attempt_keys(user_id, photo_id, state.pipeline_stage or state.value),
        ]
        span = _tracer.start_as_current_span(
            "status.write", attributes={"photo.id": photo_id, "status.stage": state.value}
        )
        with span, _transient():
            self._redis.zadd(ACTIVE_USERS, {user_id: at}, gt=True)
            applied = bool(self._record(keys=keys, args=args))
            if applied and state.pipeline_stage is not None:
                self._add_sample(state.pipeline_stage, StageSample(at, duration_ms, reason))
        return applied

    def claim(self, user_id: str, photo_id: str, done: PhotoState) -> Claim:
        """Claim a photo for the stage that ends in `done`, unless it finished that stage
        already or another delivery holds it (see Claim)."""
        allowed, _, _ = _TRANSITIONS[done]
        stage = done.pipeline_stage or done.value
        token = os.urandom(8).hex()
        args = [
            photo_id,
            int(self._settings.lease_s * 1000),
            int(self._settings.retention_s),
            self._settings.max_crashes,
            token,
            *allowed,
        ]
        keys = [
            user_keys(user_id)[0],
            _record_keys(user_id)[0],
            *_attempt_keys(user_id, photo_id, stage),
        ]
        with _transient():
            outcome, detail = self._claim(keys=keys, args=args)
        if outcome == "finished":
            return Claim(outcome, token, reply=json.loads(detail) if detail else None)
        return Claim(outcome, token, crashes=int(detail) if detail else 0)

    def release(self, user_id: str, photo_id: str, done: PhotoState, claim: Claim) -> None:
        """Give back a claim whose attempt ended without recording (a transient failure)."""
        _, lease, attempts = _attempt_keys(user_id, photo_id, done.pipeline_stage or done.value)
        with _transient():
            self._release(keys=[lease, attempts], args=[claim.token])

    def declare_upload(self, user_id: str, expected: int, at: float | None = None) -> int:
        """The front end is about to upload `expected` photos; returns the run's photo count."""
        at = time.time() if at is None else at
        args = [expected, repr(at), self._settings.upload_declaration_ttl_s]
        with _transient():
            self._redis.zadd(ACTIVE_USERS, {user_id: at}, gt=True)
            return int(self._declare(keys=user_keys(user_id), args=args))

    def sweep(self, now: float | None = None) -> int:
        """Fail as `timed_out` the photos that waited longer than the deadline for a stage,
        at most once per sweep interval whichever replica asks; the number failed."""
        now = time.time() if now is None else now
        interval_ms = max(1, int(self._settings.sweep_interval_s * 1000))
        cutoff = now - self._settings.pending_deadline_s
        with _transient():
            if not self._redis.set(SWEEP_LOCK, "1", nx=True, px=interval_ms):
                return 0
            users = self._redis.zrange(ACTIVE_USERS, 0, -1)
            pipe = self._redis.pipeline(transaction=False)
            for user_id in users:
                for queue in user_keys(user_id)[4:]:
                    pipe.zrangebyscore(queue, "-inf", cutoff, start=0, num=_SWEPT_PER_QUEUE)
            overdue = pipe.execute()
        swept = 0
        per_user = iter(overdue)
        for user_id in users:
            for stage in STAGES:
                for photo_id in next(per_user):
                    swept += self._time_out(user_id, photo_id, stage, now)
        return swept

    def _time_out(self, user_id: str, photo_id: str, stage: str, now: float) -> bool:
        detail = f"waited over {self._settings.pending_deadline_s:g} s for {stage}"
        failed = self.record(
            user_id, photo_id, _TIMED_OUT_AS[stage], reason="timed_out", detail=detail, at=now,
            swept=True,
        )  # fmt: skip
        if failed:
            with photo_context(user_id, photo_id):
                log.warning(
                    "%s failed: timed_out: %s", stage, detail, extra={"reason": "timed_out"}
                )
        return failed

    def _add_sample(self, stage: str, sample: StageSample) -> None:
        key = samples_key(stage)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(key, {_encode_sample(sample): sample.at})
        pipe.zremrangebyscore(key, "-inf", f"({sample.at - self._settings.latency_window_s}")
        pipe.zremrangebyrank(key, 0, -self._settings.samples_kept - 1)
        pipe.execute()


def _transient() -> AbstractContextManager[None]:
    return unavailable_as_transient("status store")
