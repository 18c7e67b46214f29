"""Admin sessions: their own key, a maximum age checked server-side, a new id per login, and
a server-side record that logout deletes."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from functions.status.admin_store import SessionStore
from functions.status.auth import ADMIN_COOKIE, SESSION_TYPE
from tests.status_fixtures import (  # noqa: F401 - fixtures
    ADMIN_PASSWORD,
    SECRET,
    SESSION_SECRET,
    admin_settings,
    app,
    auth_settings,
    client,
    store,
)

THREE_YEARS_S = 3 * 365 * 24 * 3600


def session_cookie(secret: str, *, issued_at: float, ttl_s: float, jti: str | None) -> str:
    claims = {
        "sub": "admin",
        "role": "admin",
        "iss": "status-admin-login",
        "aud": "status-admin-session",
        "iat": int(issued_at),
        "exp": int(issued_at + ttl_s),
        "jti": jti or uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": SESSION_TYPE})


def admin_answer(client, cookie: str) -> int:
    client.set_cookie(ADMIN_COOKIE, cookie, path="/v1/admin")
    return client.get("/v1/admin/thresholds").status_code


def login(client) -> str:
    response = client.post("/v1/admin/login", json={"password": ADMIN_PASSWORD})
    assert response.status_code == 200
    return response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


@pytest.mark.parametrize("secret", [SECRET, SESSION_SECRET], ids=["user-secret", "session-key"])
def test_a_self_minted_three_year_session_is_refused(client, secret):
    forged = session_cookie(secret, issued_at=time.time(), ttl_s=THREE_YEARS_S, jti=None)
    assert admin_answer(client, forged) == 401


def test_a_session_past_its_maximum_age_is_refused_whatever_its_exp(client, store, admin_settings):
    """Even with the session key and a session id the server knows, `iat` + TTL bounds it."""
    session_id = uuid.uuid4().hex
    SessionStore(store.client).open(session_id, admin_settings.session_ttl_s)
    issued_at = time.time() - admin_settings.session_ttl_s - 60
    aged = session_cookie(SESSION_SECRET, issued_at=issued_at, ttl_s=THREE_YEARS_S, jti=session_id)
    assert admin_answer(client, aged) == 401


def test_a_session_with_a_known_id_within_its_age_is_accepted(client, store, admin_settings):
    session_id = uuid.uuid4().hex
    SessionStore(store.client).open(session_id, admin_settings.session_ttl_s)
    fresh = session_cookie(SESSION_SECRET, issued_at=time.time(), ttl_s=60, jti=session_id)
    assert admin_answer(client, fresh) == 200


def test_a_session_is_refused_after_logout_even_if_the_cookie_was_kept(client):
    kept = login(client)
    assert admin_answer(client, kept) == 200
    client.post("/v1/admin/logout")
    assert admin_answer(client, kept) == 401


def test_logout_ends_only_its_own_session(app):
    first, second = app.test_client(), app.test_client()
    first_cookie, second_cookie = login(first), login(second)
    first.post("/v1/admin/logout")
    assert admin_answer(first, first_cookie) == 401
    assert admin_answer(second, second_cookie) == 200


def test_each_login_issues_a_new_session_id(client):
    ids = {jwt.decode(login(client), options={"verify_signature": False})["jti"] for _ in "ab"}
    assert len(ids) == 2


def test_the_session_record_expires_with_the_session(client, store, admin_settings):
    session_id = jwt.decode(login(client), options={"verify_signature": False})["jti"]
    ttl = store.client.ttl(f"admin_session:{session_id}")
    assert 0 < ttl <= admin_settings.session_ttl_s


def test_a_session_cookie_is_not_a_user_token(client):
    assert (
        client.get("/v1/status", headers={"Authorization": f"Bearer {login(client)}"}).status_code
        == 401
    )
