"""Who may read what: bearer JWTs for users (HS256, or RS256 from a JWKS), the admin role, and
the admin session cookie (tests/security/ has the attacks on each)."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from functions.common.config import AdminSettings, AuthSettings
from functions.status.app import create_app
from functions.status.auth import ADMIN_COOKIE
from tests.status_fixtures import (  # noqa: F401 - fixtures
    ADMIN_PASSWORD,
    AUDIENCE,
    ISSUER,
    SECRET,
    SESSION_SECRET,
    admin_settings,
    app,
    as_admin,
    as_user,
    auth_settings,
    bearer,
    client,
    store,
    token,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_url(serve, rsa_key):
    """A real JWKS endpoint over HTTP, as an identity provider publishes it."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    provider = Flask("identity_provider")
    provider.add_url_rule(
        "/.well-known/jwks.json", "jwks", lambda: {"keys": [{**jwk, "kid": "k1", "use": "sig"}]}
    )
    return serve(provider) + "/.well-known/jwks.json"


def rs256_token(rsa_key, sub="ann", **claims):
    payload = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, rsa_key, algorithm="RS256", headers={"kid": "k1"})


def verifying(**settings) -> AuthSettings:
    """AuthSettings with the fixtures' issuer and audience."""
    return AuthSettings(**{"issuer": ISSUER, "audience": AUDIENCE, **settings})


def status_code(client, headers, path="/v1/status"):
    return client.get(path, headers=headers).status_code


# Bearer tokens


def test_a_valid_token_reads_its_own_status(client):
    assert status_code(client, as_user("ann")) == 200


def test_a_missing_token_is_refused_with_401(client):
    response = client.get("/v1/status")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_non_bearer_authorization_is_refused(client):
    assert status_code(client, {"Authorization": f"Basic {token()}"}) == 401


def test_an_expired_token_is_refused(client):
    assert status_code(client, bearer(token(ttl_s=-60))) == 401


def test_a_token_that_expires_after_its_first_use_is_refused_from_then_on(store, admin_settings):
    client = create_app(store, verifying(jwt_secret=SECRET, leeway_s=0), admin_settings)
    client = client.test_client()
    expires_at = int(time.time()) + 2  # at least a second to make the first request
    short_lived = token(exp=expires_at)
    assert status_code(client, bearer(short_lived)) == 200
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    assert status_code(client, bearer(short_lived)) == 401


def test_a_token_without_expiry_is_refused(client):
    forever = token(exp=None)
    assert status_code(client, bearer(forever)) == 401


def test_a_token_without_subject_is_refused(client):
    anonymous = token(None)
    assert status_code(client, bearer(anonymous)) == 401


def test_an_unsigned_alg_none_token_is_refused(client):
    forged = unsigned_token({"sub": "ann", "exp": int(time.time()) + 60, "role": "admin"})
    assert status_code(client, bearer(forged)) == 401


def test_a_token_signed_with_another_secret_is_refused(client):
    other = token(secret="x" * 40)
    assert status_code(client, bearer(other)) == 401


def test_an_hs512_token_is_refused_because_the_algorithm_is_pinned(client):
    hs512 = jwt.encode({"sub": "ann", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512")
    assert status_code(client, bearer(hs512)) == 401


def test_an_rs256_token_is_refused_without_a_jwks(client, rsa_key):
    assert status_code(client, bearer(rs256_token(rsa_key))) == 401


def test_a_malformed_token_is_refused(client):
    assert status_code(client, bearer("not.a.jwt")) == 401


def test_user_a_cannot_read_user_b(client):
    assert status_code(client, as_user("ann"), "/v1/users/bob/status") == 403


def test_an_admin_token_reads_any_user(client):
    assert status_code(client, as_admin(), "/v1/users/bob/status") == 200


def test_a_token_with_an_unexpected_audience_is_refused(client):
    assert status_code(client, bearer(token(aud="another-app"))) == 401


def test_the_configured_audience_is_required(store, admin_settings):
    settings = verifying(jwt_secret=SECRET, audience="photos-app")
    client = create_app(store, settings, admin_settings).test_client()
    assert status_code(client, bearer(token(aud="photos-app"))) == 200
    assert status_code(client, bearer(token())) == 401


def test_a_short_secret_is_refused_at_start_up():
    with pytest.raises(ValueError, match="32 bytes"):
        AuthSettings(jwt_secret="short")


def test_no_verifier_at_all_is_refused_at_start_up():
    with pytest.raises(ValueError, match="JWT_SECRET"):
        AuthSettings()


# RS256 through a JWKS


def test_an_rs256_token_from_the_jwks_is_accepted(store, admin_settings, jwks_url, rsa_key):
    settings = verifying(jwt_secret=SECRET, jwks_url=jwks_url)
    client = create_app(store, settings, admin_settings).test_client()
    assert status_code(client, bearer(rs256_token(rsa_key))) == 200
    assert status_code(client, as_user()) == 200


def test_an_hs256_token_keyed_with_the_rsa_public_key_is_refused(
    store, admin_settings, jwks_url, rsa_key
):
    """The algorithm-confusion attack: the public key is public, so it must never be an HMAC key."""
    settings = verifying(jwks_url=jwks_url)
    client = create_app(store, settings, admin_settings).test_client()
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    payload = {"sub": "ann", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64url(json.dumps(payload).encode())
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        f"{header}.{body}".encode(), public_pem
    )
    forged = f"{header}.{body}.{b64url(signature)}"
    assert status_code(client, bearer(forged)) == 401


def test_an_rs256_token_signed_by_another_key_is_refused(store, admin_settings, jwks_url):
    settings = verifying(jwks_url=jwks_url)
    client = create_app(store, settings, admin_settings).test_client()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert status_code(client, bearer(rs256_token(stranger))) == 401


def test_an_unreachable_jwks_answers_503(store, admin_settings, rsa_key, refused_port):
    settings = verifying(jwks_url=f"http://127.0.0.1:{refused_port}/jwks.json")
    client = create_app(store, settings, admin_settings).test_client()
    assert status_code(client, bearer(rs256_token(rsa_key))) == 503


# Admin role and session


def test_the_admin_api_refuses_a_missing_token_with_401(client):
    assert client.get("/v1/admin/overview").status_code == 401


def test_the_admin_api_refuses_a_user_token_with_403(client):
    assert client.get("/v1/admin/overview", headers=as_user()).status_code == 403


def test_the_admin_api_accepts_an_admin_token(client):
    assert client.get("/v1/admin/overview", headers=as_admin()).status_code == 200


def test_a_wrong_password_is_refused_and_sets_no_cookie(client):
    response = client.post("/v1/admin/login", json={"password": "guess"})
    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers


def test_a_client_is_refused_for_the_rest_of_the_window_after_too_many_wrong_passwords(
    client, admin_settings
):
    for _ in range(admin_settings.login_failures_per_client):
        assert client.post("/v1/admin/login", json={"password": "guess"}).status_code == 401
    response = client.post("/v1/admin/login", json={"password": ADMIN_PASSWORD})
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= admin_settings.login_window_s
    assert "Set-Cookie" not in response.headers


def test_login_without_a_password_field_is_a_bad_request(client):
    assert client.post("/v1/admin/login", json={}).status_code == 400


def test_login_sets_a_short_lived_httponly_strict_session_cookie(client, admin_settings):
    response = client.post("/v1/admin/login", json={"password": ADMIN_PASSWORD})
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{ADMIN_COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/v1/admin"):
        assert attribute in cookie
    assert f"Max-Age={admin_settings.session_ttl_s}" in cookie


def test_the_session_cookie_opens_the_admin_api(client):
    client.post("/v1/admin/login", json={"password": ADMIN_PASSWORD})
    assert client.get("/v1/admin/thresholds").status_code == 200


def test_logout_clears_the_session(client):
    client.post("/v1/admin/login", json={"password": ADMIN_PASSWORD})
    client.post("/v1/admin/logout")
    assert client.get("/v1/admin/thresholds").status_code == 401


def test_an_expired_session_cookie_is_refused(client, app):
    expired = jwt.encode(
        {"sub": "admin", "aud": "status-admin-session", "iat": 0, "exp": 1, "jti": "x"},
        SESSION_SECRET,
        algorithm="HS256",
    )
    client.set_cookie(ADMIN_COOKIE, expired, path="/v1/admin")
    assert client.get("/v1/admin/thresholds").status_code == 401


def test_a_user_token_in_the_session_cookie_is_refused(client):
    client.set_cookie(ADMIN_COOKIE, token("ann", role="admin"), path="/v1/admin")
    assert client.get("/v1/admin/thresholds").status_code == 401


def test_the_session_cookie_is_not_a_bearer_token(client):
    login = client.post("/v1/admin/login", json={"password": ADMIN_PASSWORD})
    session = login.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    client.delete_cookie(ADMIN_COOKIE, path="/v1/admin")
    assert status_code(client, bearer(session), "/v1/admin/thresholds") == 401


def test_login_is_off_without_a_configured_password(store, auth_settings):
    client = create_app(store, auth_settings, AdminSettings(password=None)).test_client()
    assert client.post("/v1/admin/login", json={"password": ""}).status_code == 401
