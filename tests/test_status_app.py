"""The status function's user API: what the front end polls, the declared upload, and the
Triggers' dead-letter sink."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

import time

import pytest
import redis
from cloudevents.v1.http import CloudEvent
from prometheus_client import REGISTRY
from werkzeug.test import Client

from functions.common.errors import TransientError
from functions.common.events import OBJECT_CREATED, binary_http
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE, PhotoState
from functions.status.app import create_app
from functions.status.status_reader import StatusReader
from tests.status_fixtures import (  # noqa: F401 - fixtures
    FRONT_END,
    admin_settings,
    app,
    as_user,
    auth_settings,
    client,
    dead_letter_app,
    store,
)

THUMBNAIL_CREATED = PIPELINE["thumbnail"].created


def dead_lettered(event_type, key="ann/a.jpg"):
    event = CloudEvent(
        {
            "type": event_type,
            "source": "/test",
            "knativeerrorcode": "503",
            "knativeerrordest": "http://thumbnail",
        },
        {"bucket": "photos", "key": key, "user_id": "ann"},
    )
    return binary_http(event)


@pytest.fixture
def dead_letter_client(dead_letter_app):
    return dead_letter_app.test_client()


def own_status(client, user_id="ann", **headers):
    return client.get("/v1/status", headers={**as_user(user_id), **headers})


def test_status_of_a_user_with_pending_thumbnails_says_processing(client, store):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    body = own_status(client).get_json()
    assert (body["phase"], body["message"]) == ("processing", "Processing your photos")
    assert body["run"]["thumbnails_pending"] == 1


def test_status_of_a_user_with_pending_embeddings_says_indexing_with_ai(client, store):
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL)
    body = own_status(client).get_json()
    assert (body["phase"], body["message"]) == ("indexing", "Indexing with AI")


def test_status_of_a_new_user_is_idle_with_zero_counts(client):
    body = own_status(client, "nobody").get_json()
    assert (body["phase"], body["message"]) == ("idle", "")
    assert body["counts"]["uploaded"] == 0
    assert (body["run"]["started_at"], body["run"]["progress"], body["run"]["eta_s"]) == (
        None,
        1.0,
        0.0,
    )


def test_status_reports_the_run_with_progress_and_lifetime_counts(client, store):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL)
    store.record("ann", "b.jpg", PhotoState.UPLOADED)
    body = own_status(client).get_json()
    run = body["run"]
    assert (run["expected"], run["uploaded"], run["thumbnails_done"]) == (2, 2, 1)
    assert run["progress"] == 0.25
    assert run["eta_s"] is not None
    assert body["counts"]["uploaded"] == 2


def test_the_users_path_reads_the_tokens_own_user(client, store):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    response = client.get("/v1/users/ann/status", headers=as_user("ann"))
    assert response.get_json()["counts"]["uploaded"] == 1


def test_status_is_never_cached(client):
    assert own_status(client).headers["Cache-Control"] == "no-store"


def test_an_unchanged_status_answers_304_to_its_etag(client):
    etag = own_status(client).headers["ETag"]
    response = own_status(client, **{"If-None-Match": etag})
    assert (response.status_code, response.data) == (304, b"")
    assert response.headers["ETag"] == etag


def test_a_run_in_progress_answers_304_while_nothing_changes(client, store):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL)
    first = own_status(client)
    assert first.get_json()["run"]["eta_s"] is not None
    assert own_status(client, **{"If-None-Match": first.headers["ETag"]}).status_code == 304


def test_a_changed_status_answers_200_with_a_new_etag(client, store):
    etag = own_status(client).headers["ETag"]
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    response = own_status(client, **{"If-None-Match": etag})
    assert response.status_code == 200
    assert response.headers["ETag"] != etag


def test_a_declared_upload_makes_the_phase_processing_at_once(client):
    response = client.post("/v1/uploads", json={"expected": 4}, headers=as_user())
    body = response.get_json()
    assert (response.status_code, body["phase"]) == (200, "processing")
    assert (body["run"]["expected"], body["run"]["uploaded"]) == (4, 0)
    assert own_status(client).get_json()["phase"] == "processing"


def test_a_declared_upload_counts_for_the_tokens_user_only(client):
    client.post("/v1/uploads", json={"expected": 4}, headers=as_user("ann"))
    assert own_status(client, "bob").get_json()["phase"] == "idle"


def test_a_declared_upload_needs_a_whole_positive_count(client):
    for body in ({"expected": 0}, {"expected": 2.5}, {"expected": True}, {"expected": "3"}, []):
        response = client.post("/v1/uploads", json=body, headers=as_user())
        assert response.status_code == 400, body
        assert "expected" in response.get_json()["error"]


def test_a_declared_upload_needs_a_token(client):
    assert client.post("/v1/uploads", json={"expected": 1}).status_code == 401


def test_a_configured_front_end_origin_may_read_the_status(client):
    response = own_status(client, Origin=FRONT_END)
    assert response.headers["Access-Control-Allow-Origin"] == FRONT_END
    assert "ETag" in response.headers["Access-Control-Expose-Headers"]


def test_a_preflight_from_the_front_end_allows_the_authorization_header(client):
    response = client.options(
        "/v1/status",
        headers={
            "Origin": FRONT_END,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 200
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


def test_another_origin_gets_no_cors_headers(client):
    response = own_status(client, Origin="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_admin_api_gets_no_cors_headers(client):
    response = client.get("/v1/admin/thresholds", headers={"Origin": FRONT_END})
    assert "Access-Control-Allow-Origin" not in response.headers


def _answer(response):
    return response.status, sorted(response.headers.items()), response.data


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"If-None-Match": "CURRENT"},
        {"If-None-Match": 'W/"CURRENT"'},
        {"If-None-Match": '"stale"'},
        {"Origin": FRONT_END},
        {"Origin": FRONT_END, "If-None-Match": "CURRENT"},
        {"Origin": "https://evil.example"},
    ],
    ids=["plain", "etag", "weak-etag", "stale-etag", "front-end", "front-end-304", "other-origin"],
)
def test_the_fast_path_answers_a_poll_exactly_as_the_flask_route_does(
    app, store, headers, monkeypatch
):
    store.record("ann", "a.jpg", PhotoState.UPLOADED, reason=None)
    store.record("ann", "b.jpg", PhotoState.THUMBNAIL_FAILED, reason="corrupt")
    etag = own_status(app.test_client()).headers["ETag"].strip('"')
    headers = {name: value.replace("CURRENT", etag) for name, value in headers.items()}
    flask_only = Client(app.wsgi_app.fallback)
    expected = flask_only.get("/v1/status", headers={**as_user(), **headers})
    monkeypatch.setattr(app.wsgi_app, "fallback", None)  # so the fast path must answer
    assert _answer(own_status(app.test_client(), **headers)) == _answer(expected)


def test_a_poll_without_a_valid_token_goes_on_to_flasks_401(client):
    response = client.get("/v1/status", headers={"Authorization": "Bearer not-a-jwt"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_a_poll_that_failed_on_the_fast_path_is_not_tried_again(app, monkeypatch):
    reads = []

    def unavailable(reader, user_id):
        reads.append(user_id)
        raise TransientError("status store unavailable")

    monkeypatch.setattr(StatusReader, "user_status", unavailable)
    assert own_status(app.test_client()).status_code == 503
    assert reads == ["ann"]


def test_a_failed_polls_duration_includes_the_time_spent_on_the_fast_path(app, monkeypatch):
    def slow_outage(reader, user_id):
        time.sleep(0.2)
        raise TransientError("status store unavailable")

    monkeypatch.setattr(StatusReader, "user_status", slow_outage)
    labels = {"app": "functions.status.app", "route": "/v1/status"}
    before = REGISTRY.get_sample_value("http_request_duration_seconds_sum", labels) or 0
    assert own_status(app.test_client()).status_code == 503
    assert REGISTRY.get_sample_value("http_request_duration_seconds_sum", labels) - before >= 0.2


def test_an_unexpected_error_in_a_fast_poll_is_answered_and_counted_by_flask(app, monkeypatch):
    monkeypatch.setattr(StatusReader, "user_status", lambda reader, user_id: int("not a count"))
    labels = {"app": "functions.status.app", "method": "GET", "route": "/v1/status"}
    before = REGISTRY.get_sample_value("http_requests_total", {**labels, "status": "500"}) or 0
    response = own_status(app.test_client(), Origin=FRONT_END)
    assert (response.status_code, response.is_json) == (500, True)
    assert response.headers["Access-Control-Allow-Origin"] == FRONT_END
    assert REGISTRY.get_sample_value("http_requests_total", {**labels, "status": "500"}) == (
        before + 1
    )


def test_a_fast_poll_is_counted_in_the_request_metrics(app, monkeypatch):
    monkeypatch.setattr(app.wsgi_app, "fallback", None)  # so the fast path must answer
    labels = {"app": "functions.status.app", "method": "GET", "route": "/v1/status"}
    before = REGISTRY.get_sample_value("http_requests_total", {**labels, "status": "200"}) or 0
    own_status(app.test_client())
    assert REGISTRY.get_sample_value("http_requests_total", {**labels, "status": "200"}) == (
        before + 1
    )


def test_the_public_status_service_does_not_serve_the_dead_letter_sink(client, store, reader):
    store.record("ann", "ann/a.jpg", PhotoState.UPLOADED)
    headers, body = dead_lettered(OBJECT_CREATED)
    assert client.post("/v1/dead-letter", data=body, headers=headers).status_code == 404
    assert reader.user_status("ann").counts["thumbnails_failed"] == 0


def test_a_dead_lettered_upload_marks_the_thumbnail_failed(dead_letter_client, store, reader):
    store.record("ann", "ann/a.jpg", PhotoState.UPLOADED)
    headers, body = dead_lettered(OBJECT_CREATED)
    assert dead_letter_client.post("/v1/dead-letter", data=body, headers=headers).status_code == 200
    status = reader.user_status("ann")
    assert (status.counts["thumbnails_failed"], status.phase) == (1, "idle")
    assert status.failures[0]["reason"] == "delivery_failed"
    assert status.failures[0]["detail"] == "the thumbnail stage answered 503 after all retries"


def test_a_dead_lettered_thumbnail_event_marks_the_embedding_failed(
    dead_letter_client, store, reader
):
    store.record("ann", "ann/a.jpg", PhotoState.THUMBNAIL)
    headers, body = dead_lettered(THUMBNAIL_CREATED)
    dead_letter_client.post("/v1/dead-letter", data=body, headers=headers)
    status = reader.user_status("ann")
    assert (status.counts["embeddings_failed"], status.phase) == (1, "idle")


def test_a_dead_lettered_upload_whose_thumbnail_was_made_marks_the_embedding_failed(
    dead_letter_client, store, reader
):
    store.record("ann", "ann/a.jpg", PhotoState.THUMBNAIL)  # its thumbnail.created reply was lost
    headers, body = dead_lettered(OBJECT_CREATED)
    response = dead_letter_client.post("/v1/dead-letter", data=body, headers=headers)
    assert response.get_json() == {"recorded": "embedding_failed"}
    status = reader.user_status("ann")
    counts = status.counts
    assert (counts["embeddings_failed"], counts["thumbnails_failed"], status.phase) == (
        1,
        0,
        "idle",
    )
    assert status.failures[0]["reason"] == "delivery_failed"


def test_a_dead_letter_that_is_not_a_cloudevent_is_refused(dead_letter_client):
    assert dead_letter_client.post("/v1/dead-letter", data=b"{}").status_code == 400


def test_a_redis_outage_answers_503(auth_settings, admin_settings):
    unreachable = PhotoStore(redis.Redis(port=1, socket_connect_timeout=0.2))
    app = create_app(unreachable, auth_settings, admin_settings)
    assert app.test_client().get("/v1/status", headers=as_user()).status_code == 503


@pytest.mark.parametrize("app_fixture", ["app", "dead_letter_app"])
def test_the_openapi_document_describes_every_route(app_fixture, request):
    app = request.getfixturevalue(app_fixture)
    document = app.test_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    served = {
        rule.rule.replace("<user_id>", "{user_id}")
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    assert served == set(document["paths"])
