"""User tokens are strict: issuer, audience, type and expiry are all checked, a user token
never grants the admin role, and nothing a caller sends as a token answers anything but 401."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.common.config import AdminSettings, AuthSettings
from functions.status.auth import SESSION_TYPE
from tests.status_fixtures import (  # noqa: F401 - fixtures
    ADMIN_AUDIENCE,
    ADMIN_ISSUER,
    AUDIENCE,
    ISSUER,
    SECRET,
    admin_settings,
    admin_token,
    app,
    as_user,
    auth_settings,
    bearer,
    client,
    store,
    token,
)

_no_fixture_reset = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def status_code(client, value: str, path: str = "/v1/status") -> int:
    return client.get(path, headers=bearer(value)).status_code


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": None},
        {"iss": "https://attacker.example"},
        {"aud": None},
        {"aud": "another-app"},
        {"exp": None},
        {"exp": int(time.time()) - 120},  # expired far beyond the clock skew
        {"nbf": int(time.time()) + 120},
    ],
    ids=["no-iss", "wrong-iss", "no-aud", "wrong-aud", "no-exp", "expired", "not-yet-valid"],
)
def test_a_token_missing_or_failing_a_required_claim_is_refused(client, claims):
    assert status_code(client, token(**claims)) == 401


@pytest.mark.parametrize("typ", [SESSION_TYPE, "dpop+jwt", "JWE", "jwt+session"])
def test_a_token_of_another_type_is_refused(client, typ):
    assert status_code(client, token(headers={"typ": typ})) == 401


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+jwt"])
def test_a_token_typed_as_an_access_token_is_accepted(client, typ):
    assert status_code(client, token(headers={"typ": typ})) == 200


def test_a_token_expired_within_the_clock_skew_is_accepted(client):
    assert status_code(client, token(exp=int(time.time()) - 2)) == 200


def test_the_issuer_and_audience_are_required_at_start_up():
    with pytest.raises(ValueError, match="JWT_ISSUER"):
        AuthSettings(jwt_secret=SECRET, audience=AUDIENCE)
    with pytest.raises(ValueError, match="JWT_AUDIENCE"):
        AuthSettings(jwt_secret=SECRET, issuer=ISSUER)


def test_a_clock_skew_over_a_minute_is_refused_at_start_up():
    with pytest.raises(ValueError, match="JWT_LEEWAY_S"):
        AuthSettings(jwt_secret=SECRET, issuer=ISSUER, audience=AUDIENCE, leeway_s=3600)


def test_a_user_token_claiming_the_admin_role_is_not_admin(client):
    """Whoever can sign user tokens (the app's backend, or a leak of JWT_SECRET) is no admin."""
    forged = token("mallory", role="admin")
    assert status_code(client, forged, "/v1/admin/overview") == 403
    assert status_code(client, forged, "/v1/users/bob/status") == 403


def test_a_user_token_with_the_admin_issuer_is_not_admin(client):
    forged = token("mallory", role="admin", iss=ADMIN_ISSUER, aud=ADMIN_AUDIENCE)
    assert status_code(client, forged, "/v1/admin/overview") == 401


def test_an_admin_token_signed_with_the_admin_key_is_admin(client):
    assert status_code(client, admin_token(), "/v1/admin/overview") == 200


def test_an_admin_token_without_the_admin_role_is_forbidden(client):
    assert status_code(client, admin_token(role=None), "/v1/admin/overview") == 403


def test_the_admin_keys_may_not_be_the_user_secret(store, auth_settings):
    from functions.status.app import create_app

    for admin in (
        AdminSettings(password="pw", session_secret=SECRET),
        AdminSettings(jwt_secret=SECRET),
    ):
        with pytest.raises(ValueError, match="JWT_SECRET"):
            create_app(store, auth_settings, admin)


def test_a_password_without_a_session_key_is_refused_at_start_up():
    with pytest.raises(ValueError, match="ADMIN_SESSION_SECRET"):
        AdminSettings(password="pw")


# Property-based: whatever arrives as a token, the answer is 401, never a crash.

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@_no_fixture_reset
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=300))
def test_a_garbled_token_is_always_401(client, garbage):
    response = client.get("/v1/status", headers={"Authorization": f"Bearer {garbage}"})
    assert response.status_code == 401


@_no_fixture_reset
@given(st.text(max_size=200))
def test_any_authorization_header_is_401(client, header):
    try:
        response = client.get("/v1/status", headers={"Authorization": header})
    except ValueError:  # a header value the HTTP client itself cannot send
        return
    assert response.status_code == 401


@_no_fixture_reset
@given(
    header=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "b64"]), _json_values),
    claims=st.dictionaries(
        st.sampled_from(["sub", "iss", "aud", "exp", "nbf", "iat", "role", "jti"]), _json_values
    ),
)
def test_a_signed_token_with_any_header_and_claims_is_never_a_server_error(client, header, claims):
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input.encode(), SECRET.encode()
    )
    value = f"{signing_input}.{_b64(signature)}"
    for path in ("/v1/status", "/v1/admin/overview", "/v1/users/bob/status"):
        assert status_code(client, value, path) in {200, 401, 403}


def test_a_valid_token_still_reads_its_status(client):
    assert client.get("/v1/status", headers=as_user()).status_code == 200


def test_an_admin_token_with_a_ten_year_exp_and_an_old_iat_is_refused(client):
    now = time.time()
    old = admin_token(iat=int(now - 2 * 3600), exp=int(now + 10 * 365 * 24 * 3600))
    response = client.get("/v1/admin/thresholds", headers=bearer(old))
    assert response.status_code == 401
    assert "maximum age" in response.get_json()["error"]


def test_an_admin_token_without_iat_is_refused(client):
    assert client.get(
        "/v1/admin/thresholds", headers=bearer(admin_token(iat=None))
    ).status_code == (401)


def test_an_admin_token_within_its_maximum_age_is_accepted(client):
    fresh = admin_token(iat=int(time.time() - 60), exp=int(time.time() + 10 * 365 * 24 * 3600))
    assert client.get("/v1/admin/thresholds", headers=bearer(fresh)).status_code == 200


def test_the_admin_token_maximum_age_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("ADMIN_TOKEN_MAX_AGE_S", "120")
    assert AdminSettings.from_env().token_max_age_s == 120
    assert AdminSettings().token_max_age_s == 3600


def test_an_admin_token_polls_get_v1_status_as_on_other_routes(client, store):
    """The poll's fast path verifies user tokens only: an admin's token goes on to Flask's
    route, which answers the admin's own (empty) status, as the OpenAPI document says (the
    user is the token's `sub`), not 401."""
    response = client.get("/v1/status", headers=bearer(admin_token("ops")))
    assert response.status_code == 200
    assert response.get_json()["user_id"] == "ops"
    assert client.get("/v1/users/ann/status", headers=bearer(admin_token())).status_code == 200


def test_a_forged_admin_token_on_the_poll_is_still_401(client):
    forged = jwt.encode(
        {
            "sub": "ops",
            "role": "admin",
            "iss": ADMIN_ISSUER,
            "aud": ADMIN_AUDIENCE,
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        "not-the-admin-key-" + "0" * 32,
        algorithm="HS256",
    )
    assert client.get("/v1/status", headers=bearer(forged)).status_code == 401
