"""The B2 events the receiver has published lately, in Redis: B2 delivers at least once.

One key per event, `b2event:<eventId>`, set with an expiry of the de-duplication window once
the broker accepted the event's publish; a redelivery within the window is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from functions.common.errors import TransientError

KEY_PREFIX = "b2event:"


class SeenEvents:
    """Which B2 eventIds were published within the last `window_s` seconds."""

    def __init__(self, client: redis.Redis, window_s: float) -> None:
        self._redis = client
        self._window_ms = round(window_s * 1000)

    @classmethod
    def from_url(cls, redis_url: str, window_s: float) -> SeenEvents:
        """A client with the status store's options (functions/common/status_store.py)."""
        client = redis.Redis.from_url(
            redis_url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        )
        return cls(client, window_s)

    def is_seen(self, event_id: str) -> bool:
        """True when `event_id` was remembered within the window; TransientError when Redis
        cannot be reached."""
        with _transient():
            return bool(self._redis.exists(KEY_PREFIX + event_id))

    def remember(self, event_id: str) -> None:
        """`event_id` was published: drop it for the next window; TransientError when Redis
        cannot be reached."""
        with _transient():
            self._redis.set(KEY_PREFIX + event_id, 1, px=self._window_ms)


@contextmanager
def _transient() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise TransientError(f"seen-events store unavailable: {exc}") from exc
