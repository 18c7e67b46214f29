"""Issue #10: with Knative Eventing's OIDC sender authentication on, the stages and the
dead-letter sink take events only from the broker: a service-account token from the cluster's
issuer, for their own audience, of an allowed Trigger identity. Off (the default), events are
taken as before. The JWKS is served over real HTTP, as the API server serves it."""

# The fixtures imported from tests.status_fixtures and tests.test_status_auth are parameters.
# ruff: noqa: F811

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, request

from functions.common import event_auth
from functions.common.config import DeadLetterSettings, EventAuthSettings, StatusSettings
from functions.common.errors import TransientError
from functions.common.event_auth import EventAuthError, EventVerifier
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PhotoState
from functions.common.stage_app import StageResult, create_stage_app
from functions.status.app import create_app
from functions.thumbnail.app import STAGE
from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    auth_settings,
    store,
)
from tests.test_status_auth import jwks_url, rsa_key  # noqa: F401 - fixtures
from tests.tls_certificates import CertificateAuthority

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "serving.knative.dev/service/photos/thumbnail"
SENDER = "system:serviceaccount:photos:thumbnail-oidc-eventing.knative.dev-trigger"
PHOTO = PhotoRef("photos", "ann/a.jpg", "v1", "ann")


class Work:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, photo: PhotoRef) -> StageResult:
        self.calls += 1
        return StageResult(data={})


def sa_token(key, **claims) -> str:
    """A service-account token as the broker sends it (kid k1: the served JWKS's key)."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": SENDER, "iat": now, "exp": now + 600}
    payload |= claims
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def settings(keys_url, **overrides) -> EventAuthSettings:
    values = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": keys_url, "subjects": (SENDER,)}
    return EventAuthSettings(**(values | overrides))


def deliver(client, token=None, path="/", headers=None):
    event = new_event(OBJECT_CREATED, "/test", PHOTO, photo_data(PHOTO))
    event_headers, body = binary_http(event)
    if token is not None:
        event_headers["Authorization"] = f"Bearer {token}"
    return client.post(path, headers={**event_headers, **(headers or {})}, data=body)


@pytest.fixture
def work():
    return Work()


@pytest.fixture
def stage(redis_client, work, jwks_url):
    store = PhotoStore(redis_client, StatusSettings())
    return create_stage_app(STAGE, work, store, event_auth=settings(jwks_url)).test_client()


# -- a stage ------------------------------------------------------------------------------------


def test_a_stage_takes_an_event_from_the_broker(stage, work, rsa_key):
    assert deliver(stage, sa_token(rsa_key)).status_code == 200
    assert work.calls == 1


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "serving.knative.dev/service/photos/embed"},
        {"iss": "https://attacker.example"},
        {"exp": int(time.time()) - 120},
        {"sub": "system:serviceaccount:photos:default"},
        {"sub": "system:serviceaccount:other:thumbnail-oidc-eventing.knative.dev-trigger"},
        {"exp": None},
        {"sub": None},
    ],
    ids=["audience", "issuer", "expired", "sub", "namespace", "no exp", "no sub"],
)
def test_a_stage_refuses_a_token_that_is_not_the_brokers(stage, work, rsa_key, claims):
    response = deliver(stage, sa_token(rsa_key, **claims))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert work.calls == 0


def test_a_stage_refuses_an_event_without_a_token(stage, work):
    assert deliver(stage).status_code == 401
    assert deliver(stage, headers={"Authorization": "Basic YWRtaW46YWRtaW4="}).status_code == 401
    assert work.calls == 0


def test_a_stage_refuses_a_token_signed_with_another_key(stage, work):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert deliver(stage, sa_token(stranger)).status_code == 401
    assert work.calls == 0


def test_a_stage_refuses_an_hmac_or_unsigned_token(stage, work):
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": SENDER, "exp": int(time.time()) + 60}
    hmac = jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": "k1"})
    assert deliver(stage, hmac).status_code == 401
    assert deliver(stage, "not.a.jwt").status_code == 401
    assert work.calls == 0


def test_an_unauthenticated_event_is_refused_before_it_is_parsed(stage):
    response = stage.post("/", data=b"{}")
    assert response.status_code == 401


def test_a_stage_answers_503_when_the_issuer_keys_cannot_be_fetched(
    redis_client, work, rsa_key, refused_port
):
    store = PhotoStore(redis_client, StatusSettings())
    unreachable = settings(f"http://127.0.0.1:{refused_port}/openid/v1/jwks")
    app = create_stage_app(STAGE, work, store, event_auth=unreachable).test_client()
    response = deliver(app, sa_token(rsa_key))
    assert response.status_code == 503
    assert "127.0.0.1" not in response.get_data(as_text=True)
    assert work.calls == 0


def test_by_default_a_stage_takes_events_without_a_token(redis_client, work, monkeypatch):
    monkeypatch.delenv("EVENT_AUTH_ISSUER", raising=False)
    store = PhotoStore(redis_client, StatusSettings())
    app = create_stage_app(STAGE, work, store).test_client()
    assert deliver(app).status_code == 200
    assert work.calls == 1


# -- the settings ---------------------------------------------------------------------------------


def test_event_auth_is_off_unless_an_issuer_is_set(monkeypatch):
    for name in ("EVENT_AUTH_ISSUER", "EVENT_AUTH_AUDIENCE", "EVENT_AUTH_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    assert not EventAuthSettings.from_env().enabled
    assert EventVerifier(EventAuthSettings()).verify(None) is None


@pytest.mark.parametrize("missing", ["audience", "jwks_url", "subjects"])
def test_event_auth_fails_closed_without_its_audience_keys_or_senders(missing):
    with pytest.raises(ValueError, match="EVENT_AUTH_"):
        settings("https://kubernetes.default.svc/openid/v1/jwks", **{missing: None})


def test_a_lone_wildcard_sender_is_refused():
    with pytest.raises(ValueError, match="EVENT_AUTH_SUBJECTS"):
        settings("https://kubernetes.default.svc/openid/v1/jwks", subjects=("*",))


def test_a_sender_prefix_allows_a_namespaces_service_accounts(monkeypatch):
    monkeypatch.setenv("EVENT_AUTH_ISSUER", ISSUER)
    monkeypatch.setenv("EVENT_AUTH_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("EVENT_AUTH_JWKS_URL", "https://kubernetes.default.svc/openid/v1/jwks")
    monkeypatch.setenv("EVENT_AUTH_SUBJECTS", f"{SENDER}, system:serviceaccount:photos:*")
    allowed = EventAuthSettings.from_env()
    assert allowed.allows(SENDER)
    assert allowed.allows("system:serviceaccount:photos:embed-oidc-eventing.knative.dev-trigger")
    assert not allowed.allows("system:serviceaccount:photosx:a")
    assert not allowed.allows("system:serviceaccount:other:a")


def test_the_verifier_names_the_sender(jwks_url, rsa_key):
    verifier = EventVerifier(settings(jwks_url))
    assert verifier.verify(f"Bearer {sa_token(rsa_key)}") == SENDER
    with pytest.raises(EventAuthError):
        verifier.verify(f"Bearer {sa_token(rsa_key, sub='x')}")


# -- the API server's JWKS, read with the pod's own service-account token -------------------------


@pytest.fixture
def api_server(serve, rsa_key, tmp_path, monkeypatch):
    """The API server's JWKS over HTTPS with the cluster's CA, for service accounts only; and a
    pod's service-account directory (token, ca.crt). Returns the JWKS URL and that directory."""
    ca = CertificateAuthority.create("kubernetes")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    server = Flask("kube_apiserver")

    @server.get("/openid/v1/jwks")
    def jwks():
        if request.headers.get("Authorization") != "Bearer pod-token":
            return {"kind": "Status", "code": 401}, 401
        return {"keys": [{**jwk, "kid": "k1", "use": "sig"}]}

    url = serve(server, ca.server_context(tmp_path)) + "/openid/v1/jwks"
    # 127.0.0.1 stands for kubernetes.default.svc, whose JWKS wants the pod's own credentials.
    monkeypatch.setattr(event_auth, "_API_SERVER_HOSTS", frozenset({"127.0.0.1"}))
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token\n")
    (account / "ca.crt").write_text(ca.pem)
    return url, account


def test_the_api_servers_jwks_is_read_with_the_pods_token_and_ca(api_server, rsa_key):
    url, account = api_server
    verifier = EventVerifier(settings(url), service_account_dir=account)
    assert verifier.verify(f"Bearer {sa_token(rsa_key)}") == SENDER


def test_a_refused_jwks_read_is_transient_not_the_senders_fault(api_server, rsa_key):
    url, account = api_server
    (account / "token").write_text("expired-pod-token")
    verifier = EventVerifier(settings(url), service_account_dir=account)
    with pytest.raises(TransientError):
        verifier.verify(f"Bearer {sa_token(rsa_key)}")


# -- the dead-letter sink -------------------------------------------------------------------------

DEAD_LETTER_AUDIENCE = "serving.knative.dev/service/photos/status-dead-letter"


@pytest.fixture
def dead_letter_sink(monkeypatch, store, auth_settings, admin_settings, jwks_url):
    monkeypatch.setenv("EVENT_AUTH_ISSUER", ISSUER)
    monkeypatch.setenv("EVENT_AUTH_AUDIENCE", DEAD_LETTER_AUDIENCE)
    monkeypatch.setenv("EVENT_AUTH_JWKS_URL", jwks_url)
    monkeypatch.setenv("EVENT_AUTH_SUBJECTS", SENDER)
    sink = create_app(store, auth_settings, admin_settings, DeadLetterSettings(enabled=True))
    return sink.test_client()


def test_the_dead_letter_sink_takes_a_dead_letter_from_the_broker(
    dead_letter_sink, store, rsa_key, reader
):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    token = sa_token(rsa_key, aud=DEAD_LETTER_AUDIENCE)
    assert deliver(dead_letter_sink, token, "/v1/dead-letter").status_code == 200
    assert reader.user_status("ann").failures


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": AUDIENCE},
        {"iss": "https://attacker.example"},
        {"exp": int(time.time()) - 120},
        {"sub": "system:serviceaccount:photos:default"},
    ],
    ids=["audience", "issuer", "expired", "sub"],
)
def test_the_dead_letter_sink_refuses_a_forged_dead_letter(
    dead_letter_sink, store, rsa_key, claims, reader
):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    token = sa_token(rsa_key, **{"aud": DEAD_LETTER_AUDIENCE, **claims})
    assert deliver(dead_letter_sink, token, "/v1/dead-letter").status_code == 401
    assert deliver(dead_letter_sink, None, "/v1/dead-letter").status_code == 401
    assert not reader.user_status("ann").failures


def test_by_default_the_dead_letter_sink_takes_dead_letters_without_a_token(
    monkeypatch, store, auth_settings, admin_settings
):
    monkeypatch.delenv("EVENT_AUTH_ISSUER", raising=False)
    sink = create_app(store, auth_settings, admin_settings, DeadLetterSettings(enabled=True))
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    assert deliver(sink.test_client(), None, "/v1/dead-letter").status_code == 200
