"""The B2 events the receiver has published lately, in Redis: B2 delivers at least once.

One key per event, `b2event:<eventId>`, set with an expiry of the de-duplication window once
the broker accepted the event's publish; a redelivery within the window is dropped.
"""

from __future__ import annotations

import redis

from functions.common.redis_client import connect, unavailable_as_transient

KEY_PREFIX = "b2event:"


class SeenEvents:
    """Which B2 eventIds were published within the last `window_s` seconds."""

    def __init__(self, client: redis.Redis, window_s: float) -> None:
        self._redis = client
        self._window_ms = round(window_s * 1000)

    @classmethod
    def from_url(cls, redis_url: str, window_s: float) -> SeenEvents:
        return cls(connect(redis_url), window_s)

    def is_seen(self, event_id: str) -> bool:
        """True when `event_id` was remembered within the window; TransientError when Redis
        cannot be reached."""
        with unavailable_as_transient("seen-events store"):
            return bool(self._redis.exists(KEY_PREFIX + event_id))

    def remember(self, event_id: str) -> None:
        """`event_id` was published: drop it for the next window; TransientError when Redis
        cannot be reached."""
        with unavailable_as_transient("seen-events store"):
            self._redis.set(KEY_PREFIX + event_id, 1, px=self._window_ms)
