"""How every component reaches Redis: one set of client options, one error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from functions.common.errors import TransientError


def connect(url: str) -> redis.Redis:
    """A client of `url` that answers strings, fails fast and retries once quickly: its
    callers (B2's webhook, the broker, the front end's poll) retry too, on their own clocks."""
    return redis.Redis.from_url(
        url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        decode_responses=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
    )


@contextmanager
def unavailable_as_transient(what: str) -> Iterator[None]:
    """A Redis error becomes a TransientError naming `what`: answered 503, so the caller
    retries."""
    try:
        yield
    except redis.RedisError as exc:
        raise TransientError(f"{what} unavailable: {exc}") from exc
