"""The photo store: each photo's way through the stages in Redis, counted exactly once per
photo and stage. The stages and the receiver write through `PhotoStore` (claim a photo,
give the claim back, record where the photo is now); the status function reads what it wrote
through `StatusReader` (functions/status/status_reader.py).

The key layout, written here and read there. Per user (the `{user_id}` hash tag puts one
user's keys in one slot, so each script touches a single slot and the layout is ready for
Redis Cluster; the client today is a plain single-endpoint `redis.Redis`, which is what the
deployment runs):
- `photos:{user}`: hash photo_id -> the photo's state (a `PhotoState`: `uploaded`, or a
  stage's done or failed state, pipeline.toml); a state is only entered from an earlier one,
  so a duplicate or late delivery never counts twice.
- `user:{user}`: hash of lifetime counters (`uploaded`, `<counted_as>_done` and `_failed`
  per stage, `faces`), timestamps and the current run (`run_*` fields),
  read by the status function in one round trip with the two lists below.
- `failures:{user}`: newest failures first (JSON), capped.
- `completions:{user}`: times of the current run's newest stage completions, for the ETA.
- `queue:{user}:<stage>`: photos waiting for each stage, scored by
  the time they started waiting (the backlog and its oldest age).
- `swept:{user}`, `finished:{user}`: photos the sweeper failed, and finished photos by when
  they finished (for the retention).
- `reply:{user}:<stage>:<photo>`, `lease:...`, `attempts:...`: one photo's reply, claim and
  attempts at one stage.
- `lane:{user}:bulk`: there while the receiver puts the user's uploads in the bulk lane.

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
from typing import Any

import redis

from functions.common.config import StatusSettings
from functions.common.logs import photo_context
from functions.common.pipeline import PIPELINE, UPLOADED, Stage
from functions.common.redis_client import connect, unavailable_as_transient
from functions.common.status_model import StageSample
from functions.common.telemetry import tracer

log = logging.getLogger(__name__)

ACTIVE_USERS = "active_users"
SWEEP_LOCK = "sweeper_lock"
# How long after a user's latest bulk upload the receiver remembers that their uploads go in
# the bulk lane, at most: it forgets sooner, once none of their photos waits.
BULK_LANE_TTL_S = 3600
# Photos one sweep fails per user and stage, at most: the rest wait for the next sweep.
_SWEPT_PER_QUEUE = 1000

# The lifetime counters and timestamps in `user:{user}`; the current run's are `run_<counter>`.
COUNTERS = (
    UPLOADED,
    *(counter for stage in PIPELINE for counter in (stage.done_counter, stage.failed_counter)),
    "faces",
)
TIMESTAMPS = ("first_upload_at", "last_upload_at", *(stage.finished_at for stage in PIPELINE))


_tracer = tracer(__name__)

# The pipeline as both scripts get it, after their own arguments: for each stage in order,
# its done state, failed state and counter prefix. `STAGES[i]` is {done, failed, counted}.
_PIPELINE_ARGS = [value for st in PIPELINE for value in (st.done, st.failed, st.counted_as)]

# KEYS (both scripts): photos, user, completions, failures, swept, finished, then (record)
# the photo's reply, lease and attempts at the stage, then (both) a queue per stage.
# `run_finished` is RunStatus.finished in Lua: keep the two in step.
_RUN_HELPERS = """
local STAGES, QUEUES = {}, {}
local function read_pipeline(first, queues_from)
  for i = first, #ARGV, 3 do
    table.insert(STAGES, {done = ARGV[i], failed = ARGV[i + 1], counted = ARGV[i + 2]})
    table.insert(QUEUES, KEYS[queues_from + #STAGES - 1])
  end
end
local function run_finished(now)
  local fields = {'run_started_at', 'run_expected', 'run_expected_until', 'run_uploaded'}
  for _, s in ipairs(STAGES) do
    table.insert(fields, 'run_' .. s.counted .. '_done')
    table.insert(fields, 'run_' .. s.counted .. '_failed')
  end
  local r = redis.call('HMGET', KEYS[2], unpack(fields))
  if not r[1] then return true end
  local n = {}
  for i = 2, #r do n[i] = tonumber(r[i]) or 0 end
  local owed = n[4]
  if n[3] >= now then owed = math.max(owed, n[2]) end
  for i = 1, #STAGES do
    local done, failed = n[3 + 2 * i], n[4 + 2 * i]
    if done + failed < owed then return false end
    owed = done
  end
  return true
end
local function start_run(now)
  local fields = {'run_started_at', now, 'run_expected', 0, 'run_expected_until', 0,
    'run_uploaded', 0, 'run_faces', 0}
  for _, s in ipairs(STAGES) do
    for _, field in ipairs({'run_' .. s.counted .. '_done', 'run_' .. s.counted .. '_failed'}) do
      table.insert(fields, field)
      table.insert(fields, 0)
    end
  end
  redis.call('HSET', KEYS[2], unpack(fields))
  redis.call('DEL', KEYS[3])
end
"""

# KEYS 7-9: the photo's reply, lease and attempts at the stage. ARGV: photo_id, new state,
# timestamp, faces, failure json ('' if none), failures kept, completions kept, declaration
# ttl, reply json ('' if none), reply ttl, retention, '1' when the sweeper records, then the
# pipeline.
# A photo moves to a stage's state from `uploaded` or the done state of a stage before it. A
# photo first seen past `uploaded` (its upload record was lost) still counts as uploaded, and
# one first seen further on also counts the stages it skipped as done, so the counts stay
# consistent. A completion of a photo the sweeper failed at that stage undoes that failure
# (in the run's counts too, while the run it was swept in goes on) and counts as the
# completion it is.
_RECORD = (
    _RUN_HELPERS
    + """
read_pipeline(13, 10)
local photo, state, at = ARGV[1], ARGV[2], tonumber(ARGV[3])
-- A state's place: 0 for none or `uploaded`, else its stage's number, and whether it failed.
local function place(s)
  for i, stage in ipairs(STAGES) do
    if s == stage.done then return i, false end
    if s == stage.failed then return i, true end
  end
  return 0, false
end
local current = redis.call('HGET', KEYS[1], photo) or ''
local k, failing = place(state)
local at_stage, failed_already = place(current)
local allowed
if state == 'uploaded' then allowed = current == '' else
  allowed = not failed_already and at_stage < k
end
local swept_in_run = redis.call('HGET', KEYS[5], photo)
if not allowed and swept_in_run and k > 0 and not failing and current == STAGES[k].failed then
  local counter = STAGES[k].counted .. '_failed'
  redis.call('HINCRBY', KEYS[2], counter, -1)
  if swept_in_run == redis.call('HGET', KEYS[2], 'run_started_at') then
    redis.call('HINCRBY', KEYS[2], 'run_' .. counter, -1)
  end
  redis.call('HDEL', KEYS[5], photo)
  redis.call('ZREM', KEYS[6], photo)
  if k > 1 then current = STAGES[k - 1].done else current = 'uploaded' end
  at_stage, allowed = k - 1, true
end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], photo, state)
local function bump(field, by)
  redis.call('HINCRBY', KEYS[2], field, by)
  redis.call('HINCRBY', KEYS[2], 'run_' .. field, by)
end
if current == '' then
  if run_finished(at) then start_run(at) end
  bump('uploaded', 1)
  redis.call('HSETNX', KEYS[2], 'first_upload_at', ARGV[3])
  redis.call('HSET', KEYS[2], 'last_upload_at', ARGV[3])
  local declared_until = tonumber(redis.call('HGET', KEYS[2], 'run_expected_until')) or 0
  if declared_until >= at then
    redis.call('HSET', KEYS[2], 'run_expected_until', at + tonumber(ARGV[8]))
  end
end
if state == 'uploaded' then
  redis.call('ZADD', QUEUES[1], at, photo)
else
  for i = 1, k do redis.call('ZREM', QUEUES[i], photo) end
  if not failing and k < #STAGES then redis.call('ZADD', QUEUES[k + 1], at, photo) end
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
  for i = at_stage + 1, k - 1 do bump(STAGES[i].counted .. '_done', 1) end
  bump(STAGES[k].counted .. (failing and '_failed' or '_done'), 1)
  redis.call('HSET', KEYS[2], 'last_' .. STAGES[k].done .. '_at', ARGV[3])
end
if tonumber(ARGV[4]) > 0 then bump('faces', tonumber(ARGV[4])) end
if ARGV[5] ~= '' then
  redis.call('LPUSH', KEYS[4], ARGV[5])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
end
if ARGV[12] == '1' then
  redis.call('HSET', KEYS[5], photo, redis.call('HGET', KEYS[2], 'run_started_at') or '')
end
if ARGV[9] ~= '' then redis.call('SET', KEYS[7], ARGV[9], 'EX', ARGV[10]) end
redis.call('DEL', KEYS[8], KEYS[9])
local retention = tonumber(ARGV[11])
if failing or (k == #STAGES and k > 0) then
  redis.call('ZADD', KEYS[6], at, photo)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', at - retention, 'LIMIT', 0, 16)
  for _, old in ipairs(expired) do
    redis.call('HDEL', KEYS[1], old)
    redis.call('HDEL', KEYS[5], old)
    redis.call('ZREM', KEYS[6], old)
  end
end
for _, key in ipairs({KEYS[1], KEYS[5], KEYS[6]}) do redis.call('EXPIRE', key, retention) end
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

# KEYS: as the record script's, without its three. ARGV: photos expected, now, declaration
# ttl, then the pipeline. A declaration adds to the current run's expected photos (or starts a
# run); it holds the run open until the photos arrive or it expires, `ttl` after the
# declaration or the latest arrival.
_DECLARE = (
    _RUN_HELPERS
    + """
read_pipeline(4, 7)
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
        *(f"queue:{tag}:{stage.name}" for stage in PIPELINE),
    ]


def _run_keys(user_id: str) -> list[str]:
    """The user's keys the scripts take first: `user_keys` but the queues, then the photos
    the sweeper failed (with the run they were swept in) and finished photos by when they
    finished."""
    tag = f"{{{user_id}}}"
    return [*user_keys(user_id)[:4], f"swept:{tag}", f"finished:{tag}"]


def _queue_keys(user_id: str) -> list[str]:
    """The user's queue per stage, in the pipeline's order."""
    return user_keys(user_id)[4:]


def _attempt_keys(user_id: str, photo_id: str, stage: str) -> list[str]:
    """One photo's keys at one stage: the reply the stage sent, its lease, its attempts."""
    suffix = f"{{{user_id}}}:{stage}:{photo_id}"
    return [f"reply:{suffix}", f"lease:{suffix}", f"attempts:{suffix}"]


def _bulk_key(user_id: str) -> str:
    return f"lane:{{{user_id}}}:bulk"


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
class Backlog:
    """A user's photos waiting at any stage, and whether their uploads go in the bulk lane."""

    waiting: int
    in_bulk: bool


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
        state: str,
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
        stage = PIPELINE.stage_of(state)
        at = time.time() if at is None else at
        failure = ""
        if reason is not None:
            failure = json.dumps(
                {
                    "photo_id": photo_id,
                    "stage": str(state),
                    "reason": reason,
                    "detail": detail[:300],
                    "at": at,
                }
            )
        args = [
            photo_id,
            str(state),
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
            *_PIPELINE_ARGS,
        ]
        keys = [
            *_run_keys(user_id),
            *_attempt_keys(user_id, photo_id, stage.name if stage else str(state)),
            *_queue_keys(user_id),
        ]
        span = _tracer.start_as_current_span(
            "status.write", attributes={"photo.id": photo_id, "status.stage": str(state)}
        )
        with span, _transient():
            self._redis.zadd(ACTIVE_USERS, {user_id: at}, gt=True)
            applied = bool(self._record(keys=keys, args=args))
            if applied and stage is not None:
                self._add_sample(stage.name, StageSample(at, duration_ms, reason))
        return applied

    def claim(self, user_id: str, photo_id: str, stage: Stage) -> Claim:
        """Claim a photo for `stage`, unless it finished that stage already or another
        delivery holds it (see Claim)."""
        allowed = PIPELINE.entered_from(stage.done)
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
            _run_keys(user_id)[4],
            *_attempt_keys(user_id, photo_id, stage.name),
        ]
        with _transient():
            outcome, detail = self._claim(keys=keys, args=args)
        if outcome == "finished":
            return Claim(outcome, token, reply=json.loads(detail) if detail else None)
        return Claim(outcome, token, crashes=int(detail) if detail else 0)

    def release(self, user_id: str, photo_id: str, stage: Stage, claim: Claim) -> None:
        """Give back a claim whose attempt ended without recording (a transient failure)."""
        _, lease, attempts = _attempt_keys(user_id, photo_id, stage.name)
        with _transient():
            self._release(keys=[lease, attempts], args=[claim.token])

    def declare_upload(self, user_id: str, expected: int, at: float | None = None) -> int:
        """The front end is about to upload `expected` photos; returns the run's photo count."""
        at = time.time() if at is None else at
        args = [expected, repr(at), self._settings.upload_declaration_ttl_s, *_PIPELINE_ARGS]
        keys = [*_run_keys(user_id), *_queue_keys(user_id)]
        with _transient():
            self._redis.zadd(ACTIVE_USERS, {user_id: at}, gt=True)
            return int(self._declare(keys=keys, args=args))

    def backlog(self, user_id: str) -> Backlog:
        """The user's photos waiting for any stage, and whether their uploads go in the bulk
        lane (`set_bulk`): what the receiver chooses a lane by (functions/common/lanes.py)."""
        pipe = self._redis.pipeline(transaction=False)
        for queue in _queue_keys(user_id):
            pipe.zcard(queue)
        pipe.exists(_bulk_key(user_id))
        with _transient():
            *waiting, in_bulk = pipe.execute()
        return Backlog(sum(waiting), bool(in_bulk))

    def set_bulk(self, user_id: str, in_bulk: bool) -> None:
        """Remember that the user's uploads go in the bulk lane, for an hour after the latest
        (`in_bulk`), or forget it."""
        with _transient():
            if in_bulk:
                self._redis.set(_bulk_key(user_id), "1", ex=BULK_LANE_TTL_S)
            else:
                self._redis.delete(_bulk_key(user_id))

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
                for queue in _queue_keys(user_id):
                    pipe.zrangebyscore(queue, "-inf", cutoff, start=0, num=_SWEPT_PER_QUEUE)
            overdue = pipe.execute()
        swept = 0
        per_user = iter(overdue)
        for user_id in users:
            for stage in PIPELINE:
                for photo_id in next(per_user):
                    swept += self._time_out(user_id, photo_id, stage, now)
        return swept

    def _time_out(self, user_id: str, photo_id: str, stage: Stage, now: float) -> bool:
        detail = f"waited over {self._settings.pending_deadline_s:g} s for {stage.name}"
        failed = self.record(
            user_id, photo_id, stage.failed, reason="timed_out", detail=detail, at=now, swept=True
        )
        if failed:
            with photo_context(user_id, photo_id):
                log.warning(
                    "%s failed: timed_out: %s", stage.name, detail, extra={"reason": "timed_out"}
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
