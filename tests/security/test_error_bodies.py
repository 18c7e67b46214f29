"""A 503 tells the client a dependency is down and which trace to look for, never where it
lives: the Redis host and port, and the error's text, go to the log only."""

# The fixtures imported below are parameters of the tests.
# ruff: noqa: F811

from __future__ import annotations

import logging

import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.b2_sender import deliver, object_created
from eventing.receiver import create_app as create_receiver
from functions.common.config import StatusSettings
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.photo_store import PhotoStore
from functions.common.seen_events import SeenEvents
from functions.common.stage_app import StageResult, create_stage_app
from functions.status.app import create_app as create_status_app
from functions.thumbnail.app import STAGE
from tests.security.helpers import (
    TRACE_ID,
    WEBHOOK_SECRET,
    receiver_settings,
)
from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    as_user,
    auth_settings,
)


def dead_redis(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def assert_generic(response: requests.Response, port: int, caplog) -> None:
    body = response.json()
    assert response.status_code == 503
    assert str(port) not in response.text and "127.0.0.1" not in response.text
    assert TRACE_ID.match(body["trace_id"])
    logged = [r.getMessage() for r in caplog.records if body["trace_id"] in r.getMessage()]
    assert logged and str(port) in logged[0]  # the details, under the same trace id


def test_a_redis_outage_503_from_the_status_api_names_no_host_and_carries_a_trace_id(
    serve, refused_port, auth_settings, admin_settings, caplog
):
    store = PhotoStore(dead_redis(refused_port), StatusSettings())
    url = serve(create_status_app(store, auth_settings, admin_settings))
    with caplog.at_level(logging.WARNING):
        response = requests.get(url + "/v1/status", headers=as_user(), timeout=5)
    assert_generic(response, refused_port, caplog)


def test_a_redis_outage_503_from_a_stage_names_no_host_and_carries_a_trace_id(
    serve, refused_port, caplog
):
    def process(photo):
        return StageResult(data={})

    url = serve(
        create_stage_app(STAGE, process, PhotoStore(dead_redis(refused_port), StatusSettings()))
    )
    photo = PhotoRef("photos", "ann/1.jpg", "v1", "ann")
    headers, body = binary_http(new_event(OBJECT_CREATED, "/test", photo, photo_data(photo)))
    with caplog.at_level(logging.WARNING):
        response = requests.post(url, data=body, headers=headers, timeout=5)
    assert_generic(response, refused_port, caplog)


def test_a_redis_outage_503_from_the_receiver_names_no_host_and_carries_a_trace_id(
    serve, refused_port, redis_client, caplog
):
    dead = dead_redis(refused_port)
    app = create_receiver(receiver_settings(), PhotoStore(redis_client), SeenEvents(dead, 60))
    with caplog.at_level(logging.WARNING):
        response = deliver(serve(app), [object_created("photos", "ann/1.jpg", 1)], WEBHOOK_SECRET)
    assert_generic(response, refused_port, caplog)
