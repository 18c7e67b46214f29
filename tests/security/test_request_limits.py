"""Every HTTP endpoint refuses a body over its limit with 413 before reading it."""

# The fixtures imported below are parameters of the tests.
# ruff: noqa: F811

from __future__ import annotations

import json
import time

import redis
import requests

from devstack.b2_sender import SIGNATURE_HEADER, deliver, object_created, signature
from eventing.receiver import create_app
from functions.common.config import StatusSettings
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.photo_store import PhotoStore
from functions.common.seen_events import SeenEvents
from functions.common.stage_app import StageResult, create_stage_app
from functions.thumbnail.app import STAGE
from tests.security.helpers import (  # noqa: F401 - fixtures
    WEBHOOK_SECRET,
    raw_exchange,
    receiver,
    receiver_settings,
    status_of,
)
from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    app,
    as_user,
    auth_settings,
    store,
)

FIFTY_MIB = 50 * 1024 * 1024


def test_a_50_mib_unsigned_webhook_is_refused_413_without_being_read(receiver):
    started = time.monotonic()
    head = f"POST / HTTP/1.1\r\nHost: b2\r\nContent-Length: {FIFTY_MIB}"
    answer = raw_exchange(receiver, head, b'{"events": [')
    assert status_of(answer) == 413
    assert time.monotonic() - started < 3  # answered at once, not after waiting for 50 MiB


def test_a_chunked_webhook_over_the_limit_is_cut_off_413(receiver):
    chunk = b"x" * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20 + b"0\r\n\r\n"  # 1.25 MiB
    head = "POST / HTTP/1.1\r\nHost: b2\r\nTransfer-Encoding: chunked"
    assert status_of(raw_exchange(receiver, head, body)) == 413


def test_a_chunked_webhook_within_the_limit_is_read_whole(receiver):
    body = b'{"events": []}'
    signed = f"{SIGNATURE_HEADER}: {signature(body, WEBHOOK_SECRET)}"
    head = f"POST / HTTP/1.1\r\nHost: b2\r\nTransfer-Encoding: chunked\r\n{signed}"
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    assert status_of(raw_exchange(receiver, head, chunked)) == 200


def test_a_signed_webhook_of_51_events_is_refused_413(receiver):
    events = [object_created("photos", f"ann/{n}.jpg", 1) for n in range(51)]
    assert deliver(receiver, events, WEBHOOK_SECRET).status_code == 413


def test_a_5_kib_admin_login_is_refused_413(serve, app):
    body = json.dumps({"password": "p" * 5 * 1024}).encode()
    head = f"POST /v1/admin/login HTTP/1.1\r\nHost: s\r\nContent-Length: {len(body)}"
    assert status_of(raw_exchange(serve(app), head, body)) == 413


def test_a_17_kib_upload_declaration_is_refused_413(serve, app):
    body = json.dumps({"expected": 1, "padding": "p" * 17 * 1024})
    response = requests.post(serve(app) + "/v1/uploads", data=body, headers=as_user(), timeout=5)
    assert response.status_code == 413


def test_a_65_kib_cloudevent_to_a_stage_is_refused_413_unprocessed(serve, redis_server):
    calls = []

    def process(photo):
        return calls.append(photo) or StageResult(data={})

    stage_store = PhotoStore(redis.Redis.from_url(redis_server), StatusSettings())
    photo = PhotoRef("photos", "ann/1.jpg", "v1", "ann")
    event = new_event(OBJECT_CREATED, "/test", photo, photo_data(photo, padding="p" * 65 * 1024))
    headers, body = binary_http(event)
    url = serve(create_stage_app(STAGE, process, stage_store))
    assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 413
    assert calls == []


def test_the_limits_are_read_from_the_environment(monkeypatch, serve, redis_client):
    monkeypatch.setenv("MAX_WEBHOOK_BYTES", "100")
    app = create_app(receiver_settings(), PhotoStore(redis_client), SeenEvents(redis_client, 60))
    body = json.dumps({"events": [], "padding": "p" * 100})
    assert requests.post(serve(app), data=body, timeout=5).status_code == 413
