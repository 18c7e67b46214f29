"""The status function: what the front end polls, and the Triggers' dead-letter sink."""

import pytest
import redis
from cloudevents.v1.http import CloudEvent

from functions.common.events import OBJECT_CREATED, THUMBNAIL_CREATED, binary_http
from functions.common.status_store import Stage, StatusStore
from functions.status.app import create_app


@pytest.fixture
def store(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    return StatusStore(client)


@pytest.fixture
def client(store):
    return create_app(store).test_client()


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


def test_status_of_a_user_with_pending_thumbnails_says_processing(client, store):
    store.record("ann", "a.jpg", Stage.UPLOADED)
    body = client.get("/v1/users/ann/status").get_json()
    assert body["phase"] == "processing"
    assert body["message"] == "Processing your photos"
    assert body["counts"]["thumbnails_pending"] == 1


def test_status_of_a_user_with_pending_embeddings_says_indexing_with_ai(client, store):
    store.record("ann", "a.jpg", Stage.THUMBNAIL)
    body = client.get("/v1/users/ann/status").get_json()
    assert (body["phase"], body["message"]) == ("indexing", "Indexing with AI")


def test_status_of_an_unknown_user_is_idle_with_zero_counts(client):
    body = client.get("/v1/users/nobody/status").get_json()
    assert body["phase"] == "idle"
    assert body["counts"]["uploaded"] == 0


def test_status_is_never_cached(client):
    assert client.get("/v1/users/ann/status").headers["Cache-Control"] == "no-store"


def test_a_dead_lettered_upload_marks_the_thumbnail_failed(client, store):
    store.record("ann", "ann/a.jpg", Stage.UPLOADED)
    headers, body = dead_lettered(OBJECT_CREATED)
    assert client.post("/v1/dead-letter", data=body, headers=headers).status_code == 200
    status = store.user_status("ann")
    assert (status.thumbnails_failed, status.phase) == (1, "idle")
    assert status.failures[0]["reason"] == "delivery_failed"
    assert "503" in status.failures[0]["detail"]


def test_a_dead_lettered_thumbnail_event_marks_the_embedding_failed(client, store):
    store.record("ann", "ann/a.jpg", Stage.THUMBNAIL)
    headers, body = dead_lettered(THUMBNAIL_CREATED)
    client.post("/v1/dead-letter", data=body, headers=headers)
    status = store.user_status("ann")
    assert (status.embeddings_failed, status.phase) == (1, "idle")


def test_a_dead_letter_that_is_not_a_cloudevent_is_refused(client):
    assert client.post("/v1/dead-letter", data=b"{}").status_code == 400


def test_a_redis_outage_answers_503(store):
    unreachable = StatusStore(redis.Redis(port=1, socket_connect_timeout=0.2))
    response = create_app(unreachable).test_client().get("/v1/users/ann/status")
    assert response.status_code == 503
