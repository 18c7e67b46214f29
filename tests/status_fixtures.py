"""The status function on a real redis-server, tokens as the app's backend issues them, and
admin tokens signed with the admin key (never the users' JWT_SECRET)."""

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
from functions.common.photo_store import PhotoStore
from functions.status.app import create_app

SECRET = "test-secret-" + "0123456789abcdef" * 4  # 75 bytes: long enough for any HS*
ADMIN_PASSWORD = "correct horse battery staple"
ISSUER = "https://backend.example"
AUDIENCE = "photo-status"
ADMIN_SECRET = "admin-token-" + "fedcba9876543210" * 4
SESSION_SECRET = "admin-session-" + "00112233445566778899" * 3
ADMIN_ISSUER = AdminSettings().jwt_issuer
ADMIN_AUDIENCE = AdminSettings().jwt_audience
FRONT_END = "https://app.example"


def token(
    sub: str = "ann",
    *,
    role: str | None = None,
    ttl_s: float = 300,
    secret: str = SECRET,
    headers: dict | None = None,
    **claims,
) -> str:
    """A user token: `iss`, `aud` and `exp` as the backend sets them, overridden by `claims`
    (a claim given as None is left out)."""
    payload = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time() + ttl_s)}
    payload.update(claims)
    if role is not None:
        payload["role"] = role
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def as_user(user_id: str = "ann") -> dict[str, str]:
    return bearer(token(user_id))


def admin_token(sub: str = "ops", role: str | None = "admin", **claims) -> str:
    """An admin bearer token, signed with ADMIN_JWT_SECRET for the admin issuer/audience."""
    claims = {"iat": int(time.time()), **claims}
    return token(
        sub, role=role, secret=ADMIN_SECRET, iss=ADMIN_ISSUER, aud=ADMIN_AUDIENCE, **claims
    )


def as_admin() -> dict[str, str]:
    return bearer(admin_token())


@pytest.fixture
def store(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    return PhotoStore(client, StatusSettings(redis_url=redis_server))


@pytest.fixture
def auth_settings():
    return AuthSettings(
        jwt_secret=SECRET, issuer=ISSUER, audience=AUDIENCE, cors_origins=(FRONT_END,)
    )


@pytest.fixture
def admin_settings():
    return AdminSettings(
        password=ADMIN_PASSWORD, session_secret=SESSION_SECRET, jwt_secret=ADMIN_SECRET
    )


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
