"""The status function on a real redis-server, and tokens as the app's backend issues them."""

from __future__ import annotations

import time

import jwt
import pytest
import redis

from functions.common.config import (
    AdminSettings,
    AuthSettings,
    DeadLetterSettings,
    StatusSettings,
)
from functions.common.status_store import StatusStore
from functions.status.app import create_app

SECRET = "test-secret-" + "0123456789abcdef" * 4  # 75 bytes: long enough for any HS*
ADMIN_PASSWORD = "correct horse battery staple"
FRONT_END = "https://app.example"


def token(sub: str = "ann", *, role: str | None = None, ttl_s: float = 300, **claims) -> str:
    payload = {"sub": sub, "exp": int(time.time() + ttl_s), **claims}
    if role is not None:
        payload["role"] = role
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def as_user(user_id: str = "ann") -> dict[str, str]:
    return bearer(token(user_id))


def as_admin() -> dict[str, str]:
    return bearer(token("ops", role="admin"))


@pytest.fixture
def store(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    return StatusStore(client, StatusSettings(redis_url=redis_server))


@pytest.fixture
def auth_settings():
    return AuthSettings(jwt_secret=SECRET, cors_origins=(FRONT_END,))


@pytest.fixture
def admin_settings():
    return AdminSettings(password=ADMIN_PASSWORD)


@pytest.fixture
def app(store, auth_settings, admin_settings):
    return create_app(store, auth_settings, admin_settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def dead_letter_app(store, auth_settings, admin_settings):
    """The status image as the cluster-local `status-dead-letter` Service runs it."""
    return create_app(store, auth_settings, admin_settings, DeadLetterSettings(enabled=True))
