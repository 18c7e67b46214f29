"""The status reader: what the status function reads of the photos' states, which the stages
and the receiver write through `PhotoStore` (functions/common/photo_store.py, where the key
layout is): one user's status for the front end's poll, and the pipeline snapshot behind the
admin API's overview and the stage-health metrics.

The snapshot also drops idle users from the `active_users` index, the reader's only write.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager

import redis

from functions.common.config import StatusSettings
from functions.common.photo_store import (
    ACTIVE_USERS,
    TIMESTAMPS,
    decode_sample,
    samples_key,
    user_keys,
)
from functions.common.pipeline import PIPELINE
from functions.common.redis_client import unavailable_as_transient
from functions.common.status_model import (
    Backlog,
    PipelineSnapshot,
    RunStatus,
    StageCounts,
    UserStatus,
)
from functions.status.admin_store import THRESHOLDS, thresholds_from_hash

_FAILURES_SHOWN = 10

# KEYS: user, completions, failures. ARGV: failures shown. A status poll is this one command:
# one round trip, and one reply for the client library to parse.
_READ_STATUS = """
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
        redis.call('LRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)}
"""


# ARGV: pairs of user, score read earlier. Removes a user only if it was not active since.
_PRUNE_USERS = """
local removed = 0
for i = 1, #ARGV, 2 do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""


def _stage_counts(fields: dict[str, str], prefix: str = "") -> dict[str, StageCounts]:
    return {
        stage.name: StageCounts(
            int(fields.get(prefix + stage.done_counter, 0)),
            int(fields.get(prefix + stage.failed_counter, 0)),
        )
        for stage in PIPELINE
    }


def _run_status(
    fields: dict[str, str], completions: list[str], now: float, eta_window: int
) -> RunStatus:
    declared_until = float(fields.get("run_expected_until", 0))
    return RunStatus(
        started_at=float(fields["run_started_at"]) if "run_started_at" in fields else None,
        expected=int(fields.get("run_expected", 0)) if declared_until >= now else 0,
        uploaded=int(fields.get("run_uploaded", 0)),
        stages=_stage_counts(fields, "run_"),
        faces=int(fields.get("run_faces", 0)),
        completions=tuple(float(t) for t in completions),
        eta_window=eta_window,
    )


class StatusReader:
    """Reads users' statuses and the pipeline snapshot (the status function)."""

    def __init__(self, client: redis.Redis, settings: StatusSettings | None = None) -> None:
        self._redis = client
        self._settings = settings or StatusSettings()
        self._read_status = client.register_script(_READ_STATUS)
        self._prune_users = client.register_script(_PRUNE_USERS)

    @property
    def client(self) -> redis.Redis:
        """The Redis client, for the admin's own stores (admin_store.py) over the same
        connections."""
        return self._redis

    def user_status(self, user_id: str, now: float | None = None) -> UserStatus:
        """Counters, current run, timestamps and newest failures in one round trip."""
        keys = user_keys(user_id)
        with _transient():
            flat_fields, completions, failures = self._read_status(
                keys=[keys[1], keys[2], keys[3]], args=[_FAILURES_SHOWN]
            )
        fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
        now = time.time() if now is None else now
        return self._user_status(user_id, fields, completions, failures, now)

    def _user_status(
        self,
        user_id: str,
        fields: dict[str, str],
        completions: list[str],
        failures: list[str],
        now: float,
    ) -> UserStatus:
        return UserStatus(
            user_id=user_id,
            uploaded=int(fields.get("uploaded", 0)),
            stages=_stage_counts(fields),
            faces=int(fields.get("faces", 0)),
            timestamps={name: float(fields[name]) for name in TIMESTAMPS if name in fields},
            failures=[json.loads(item) for item in failures],
            run=_run_status(fields, completions, now, self._settings.eta_completions),
        )

    def snapshot(self, idle_retention_s: float, now: float | None = None) -> PipelineSnapshot:
        """Stage samples in the window, thresholds, and every active user's status and queues.

        Users idle for longer than `idle_retention_s` leave the active index here.
        """
        now = time.time() if now is None else now
        since = now - self._settings.latency_window_s
        with _transient():
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrevrange(ACTIVE_USERS, 0, -1, withscores=True)
            pipe.hgetall(THRESHOLDS)
            pipe.info("memory")
            for stage in PIPELINE.names:
                pipe.zrangebyscore(samples_key(stage), since, "+inf")
            active, thresholds, memory, *samples = pipe.execute()
            users, backlog = self._active_users(active, now)
            self._prune_idle(users, now - idle_retention_s)
        return PipelineSnapshot(
            now=now,
            users=users,
            backlog=backlog,
            samples={
                stage: [decode_sample(member) for member in members]
                for stage, members in zip(PIPELINE.names, samples, strict=True)
            },
            thresholds=thresholds_from_hash(thresholds),
            memory_used=int(memory["used_memory"]),
            memory_max=int(memory["maxmemory"]),
        )

    def _active_users(
        self, active: list[tuple[str, float]], now: float
    ) -> tuple[list[tuple[UserStatus, float]], dict[str, Backlog]]:
        pipe = self._redis.pipeline(transaction=False)
        for user_id, _ in active:
            keys = user_keys(user_id)
            pipe.hgetall(keys[1])
            pipe.lrange(keys[2], 0, -1)
            for queue in keys[4:]:
                pipe.zcard(queue)
                pipe.zrange(queue, 0, 0, withscores=True)
        replies = pipe.execute()
        users = []
        backlog = {stage: Backlog() for stage in PIPELINE.names}
        per_user = 2 + 2 * len(PIPELINE)
        for index, (user_id, last_active) in enumerate(active):
            fields, completions, *queues = replies[index * per_user : (index + 1) * per_user]
            users.append((self._user_status(user_id, fields, completions, [], now), last_active))
            queue_heads = zip(PIPELINE.names, queues[0::2], queues[1::2], strict=True)
            for stage, pending, head in queue_heads:
                backlog[stage] = backlog[stage].add(pending, head[0][1] if head else None)
        return users, backlog

    def _prune_idle(self, users: list[tuple[UserStatus, float]], cutoff: float) -> None:
        stale = [
            (status.user_id, last_active)
            for status, last_active in users
            if last_active < cutoff and status.phase == "idle"
        ]
        if stale:
            args = [item for user_id, last in stale for item in (user_id, repr(last))]
            self._prune_users(keys=[ACTIVE_USERS], args=args)


def _transient() -> AbstractContextManager[None]:
    return unavailable_as_transient("status store")
