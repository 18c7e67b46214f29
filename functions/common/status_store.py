"""Per-user processing status in Redis, counted exactly once per photo version.

Layout (the `{user_id}` hash tag keeps one user's keys in one Redis Cluster slot):
- `photos:{user}`: hash photo_id -> stage reached (`uploaded`, `thumbnail`, `thumbnail_failed`,
  `embedding`, `embedding_failed`); a stage is only entered from an earlier one, so a duplicate
  or late delivery never counts twice.
- `user:{user}`: hash of counters and timestamps, read by the status function in one round trip.
- `failures:{user}`: newest failures first (JSON), capped.
- `users`: set of every user seen, for the admin views.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from functions.common.config import StatusSettings
from functions.common.errors import TransientError


class Stage(StrEnum):
    UPLOADED = "uploaded"
    THUMBNAIL = "thumbnail"
    THUMBNAIL_FAILED = "thumbnail_failed"
    EMBEDDING = "embedding"
    EMBEDDING_FAILED = "embedding_failed"


# Which stages a photo may be in for each transition to apply, and which counter it bumps.
_TRANSITIONS: dict[Stage, tuple[tuple[str, ...], str, str]] = {
    Stage.UPLOADED: (("",), "uploaded", "last_upload_at"),
    Stage.THUMBNAIL: (("", "uploaded"), "thumbnails_done", "last_thumbnail_at"),
    Stage.THUMBNAIL_FAILED: (("", "uploaded"), "thumbnails_failed", "last_thumbnail_at"),
    Stage.EMBEDDING: (("", "uploaded", "thumbnail"), "embeddings_done", "last_embedding_at"),
    Stage.EMBEDDING_FAILED: (
        ("", "uploaded", "thumbnail"),
        "embeddings_failed",
        "last_embedding_at",
    ),
}

# KEYS: photos, user, failures, users. ARGV: photo_id, new stage, counter, timestamp field,
# timestamp, faces, failure json ('' if none), failures kept, user_id, allowed stages...
# A photo first seen past `uploaded` (its upload record was lost) still counts as uploaded,
# and one first seen at `embedding` also counts its thumbnail, so the counts stay consistent.
_RECORD = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local allowed = false
for i = 10, #ARGV do
  if ARGV[i] == current then allowed = true end
end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if current == '' then
  redis.call('HINCRBY', KEYS[2], 'uploaded', 1)
  redis.call('HSETNX', KEYS[2], 'first_upload_at', ARGV[5])
  if ARGV[2] ~= 'uploaded' then redis.call('HSET', KEYS[2], 'last_upload_at', ARGV[5]) end
end
if (ARGV[2] == 'embedding' or ARGV[2] == 'embedding_failed') and current ~= 'thumbnail' then
  redis.call('HINCRBY', KEYS[2], 'thumbnails_done', 1)
end
if ARGV[3] ~= 'uploaded' then redis.call('HINCRBY', KEYS[2], ARGV[3], 1) end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('HINCRBY', KEYS[2], 'faces', ARGV[6]) end
if ARGV[7] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[7])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[8]) - 1)
end
redis.call('SADD', KEYS[4], ARGV[9])
return 1
"""

_COUNTERS = (
    "uploaded",
    "thumbnails_done",
    "thumbnails_failed",
    "embeddings_done",
    "embeddings_failed",
    "faces",
)
_TIMESTAMPS = ("first_upload_at", "last_upload_at", "last_thumbnail_at", "last_embedding_at")


@dataclass(frozen=True)
class UserStatus:
    """What the status function returns for one user."""

    user_id: str
    uploaded: int
    thumbnails_done: int
    thumbnails_failed: int
    embeddings_done: int
    embeddings_failed: int
    faces: int
    timestamps: dict[str, float]
    failures: list[dict[str, Any]]

    @property
    def thumbnails_pending(self) -> int:
        return max(0, self.uploaded - self.thumbnails_done - self.thumbnails_failed)

    @property
    def embeddings_pending(self) -> int:
        return max(0, self.thumbnails_done - self.embeddings_done - self.embeddings_failed)

    @property
    def phase(self) -> str:
        if self.thumbnails_pending:
            return "processing"
        if self.embeddings_pending:
            return "indexing"
        return "idle"


class StatusStore:
    def __init__(self, client: redis.Redis, failures_kept: int = 50) -> None:
        self._redis = client
        self._failures_kept = failures_kept
        self._record = client.register_script(_RECORD)

    @classmethod
    def from_settings(cls, settings: StatusSettings) -> StatusStore:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            decode_responses=True,
            health_check_interval=30,
            # One quick retry: callers (B2's webhook, the broker) retry too, on their own clocks.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        )
        return cls(client, settings.failures_kept)

    def record(
        self,
        user_id: str,
        photo_id: str,
        stage: Stage,
        *,
        faces: int = 0,
        reason: str | None = None,
        detail: str = "",
        at: float | None = None,
    ) -> bool:
        """Move a photo to `stage`; False when it was already there or beyond (a duplicate)."""
        allowed, counter, timestamp_field = _TRANSITIONS[stage]
        at = time.time() if at is None else at
        failure = ""
        if reason is not None:
            failure = json.dumps(
                {
                    "photo_id": photo_id,
                    "stage": stage.value,
                    "reason": reason,
                    "detail": detail[:300],
                    "at": at,
                }
            )
        keys = [f"photos:{{{user_id}}}", f"user:{{{user_id}}}", f"failures:{{{user_id}}}", "users"]
        args = [
            photo_id,
            stage.value,
            counter,
            timestamp_field,
            repr(at),
            faces,
            failure,
            self._failures_kept,
            user_id,
            *allowed,
        ]
        try:
            return bool(self._record(keys=keys, args=args))
        except redis.RedisError as exc:
            raise TransientError(f"status store unavailable: {exc}") from exc

    def user_status(self, user_id: str) -> UserStatus:
        """Counters, timestamps and newest failures in one round trip."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(f"user:{{{user_id}}}")
            pipe.lrange(f"failures:{{{user_id}}}", 0, 9)
            fields, failures = pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"status store unavailable: {exc}") from exc
        return UserStatus(
            user_id=user_id,
            **{name: int(fields.get(name, 0)) for name in _COUNTERS},
            timestamps={name: float(fields[name]) for name in _TIMESTAMPS if name in fields},
            failures=[json.loads(item) for item in failures],
        )

    def users(self) -> list[str]:
        try:
            return sorted(self._redis.smembers("users"))
        except redis.RedisError as exc:
            raise TransientError(f"status store unavailable: {exc}") from exc
