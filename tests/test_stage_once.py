"""A stage does each photo's side effects once, whatever the broker or B2 deliver again, and a
photo that kills its worker ends failed instead of killing every worker after it."""

import threading
import time

import pytest
import requests

from devstack.stack import Processes
from functions.common.config import StatusSettings
from functions.common.errors import PermanentError, TransientError
from functions.common.events import (
    OBJECT_CREATED,
    PhotoRef,
    binary_http,
    new_event,
    parse_event,
    photo_data,
)
from functions.common.lanes import Lane
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE
from functions.common.stage_app import StageResult, create_stage_app
from functions.status.status_reader import StatusReader
from functions.thumbnail.app import STAGE

THUMBNAIL_FAILED = PIPELINE["thumbnail"].failed_event

PHOTO = PhotoRef("photos", "ann/写真 1.jpg", "v1", "ann")


class CountingWork:
    """A stage's work that counts its calls and does what it is told to."""

    def __init__(self, *outcomes: object) -> None:
        self.calls = 0
        self._outcomes = list(outcomes)

    def __call__(self, photo: PhotoRef) -> StageResult:
        self.calls += 1
        outcome = self._outcomes.pop(0) if self._outcomes else None
        if isinstance(outcome, Exception):
            raise outcome
        return StageResult(data={"call": self.calls}, faces=0)


@pytest.fixture
def client(redis_client):
    return redis_client


def stage(client, work, **settings):
    store = PhotoStore(client, StatusSettings(**settings))
    return create_stage_app(STAGE, work, store).test_client(), store


def deliver(app, photo=PHOTO, lane=Lane.INTERACTIVE):
    event = new_event(OBJECT_CREATED, "/test", photo, photo_data(photo), lane=lane)
    headers, body = binary_http(event)
    return app.post("/", headers=headers, data=body)


def reply_of(response):
    return parse_event(response.headers, response.get_data())


def test_a_photo_delivered_twice_is_processed_once(client):
    work = CountingWork()
    app, _ = stage(client, work)
    deliver(app)
    deliver(app)
    assert work.calls == 1


def test_a_repeated_delivery_is_answered_with_the_first_reply_event(client):
    app, _ = stage(client, CountingWork())
    first, second = reply_of(deliver(app)), reply_of(deliver(app))
    assert (second["id"], second["type"], second.data) == (first["id"], first["type"], first.data)


def test_the_reply_keeps_the_lane_of_the_event_it_answers(client):
    app, _ = stage(client, CountingWork())
    bulk = PhotoRef("photos", "bo/1.jpg", "v1", "bo")
    assert reply_of(deliver(app, bulk, Lane.BULK))["lane"] == "bulk"


def test_a_repeated_delivery_in_another_lane_is_answered_in_that_lane(client):
    app, _ = stage(client, CountingWork())
    photo = PhotoRef("photos", "bo/2.jpg", "v1", "bo")
    deliver(app, photo, Lane.INTERACTIVE)
    assert reply_of(deliver(app, photo, Lane.BULK))["lane"] == "bulk"


def test_a_failed_photos_reply_keeps_its_lane(client):
    app, _ = stage(client, CountingWork(PermanentError("corrupt", "not an image")))
    bulk = PhotoRef("photos", "bo/3.jpg", "v1", "bo")
    reply = reply_of(deliver(app, bulk, Lane.BULK))
    assert (reply["type"], reply["lane"]) == (THUMBNAIL_FAILED, "bulk")


def test_a_repeated_failure_is_answered_with_the_first_failed_event(client):
    work = CountingWork(PermanentError("corrupt", "not a JPEG"))
    app, _ = stage(client, work)
    first, second = reply_of(deliver(app)), reply_of(deliver(app))
    assert (second["type"], second.data["reason"], work.calls) == (THUMBNAIL_FAILED, "corrupt", 1)
    assert second["id"] == first["id"]


def test_a_repeat_whose_reply_has_expired_is_answered_with_no_event(client):
    app, _ = stage(client, CountingWork(), reply_ttl_s=1)
    deliver(app)
    client.delete(*client.keys("reply:*"))
    response = deliver(app)
    assert (response.status_code, response.get_data()) == (200, b"")


def test_a_delivery_while_another_works_on_the_photo_is_answered_503_untouched(client):
    work = CountingWork()
    app, store = stage(client, work)
    store.claim(PHOTO.user_id, PHOTO.photo_id, STAGE)
    assert deliver(app).status_code == 503
    assert work.calls == 0


def test_a_transient_failure_gives_the_photo_back_for_the_retry(client):
    work = CountingWork(TransientError("S3 unavailable"))
    app, _ = stage(client, work)
    assert deliver(app).status_code == 503
    assert deliver(app).status_code == 200
    assert work.calls == 2
    assert StatusReader(client).user_status("ann").counts["thumbnails_done"] == 1


def test_photos_that_differ_only_in_unicode_normalization_are_each_processed(client):
    work = CountingWork()
    app, _ = stage(client, work)
    deliver(app, PhotoRef("photos", "ann/Caf\u00e9.jpg", "v1", "ann"))
    deliver(app, PhotoRef("photos", "ann/Cafe\u0301.jpg", "v1", "ann"))
    assert work.calls == 2


def test_an_outcome_is_recorded_through_a_short_redis_outage_without_repeating_the_work(client):
    calls = []

    def work_then_outage(photo):
        calls.append(photo)
        client.config_set("min-replicas-to-write", 1)  # every write fails now: NOREPLICAS
        threading.Timer(0.5, client.config_set, ("min-replicas-to-write", 0)).start()
        return StageResult(data={})

    app, _ = stage(client, work_then_outage)
    assert deliver(app).status_code == 200
    assert (len(calls), StatusReader(client).user_status("ann").counts["thumbnails_done"]) == (1, 1)


# A worker that dies on a photo, under gunicorn as deployed

CRASHING_APP = "tests.crashing_stage:create_app()"


@pytest.fixture
def crashing_stage(tmp_path, redis_server, client):
    env = {
        "REDIS_URL": redis_server,
        "STAGE_LEASE_S": "0.3",
        "STAGE_MAX_CRASHES": "2",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "1",
    }
    with Processes(tmp_path) as processes:
        yield processes.gunicorn("crashing", CRASHING_APP, env)


POISON = PhotoRef("photos", "ann/写真 poison.jpg", "v1", "ann")


def post(url, photo=POISON):
    headers, body = binary_http(new_event(OBJECT_CREATED, "/test", photo, photo_data(photo)))
    try:
        return requests.post(url, headers=headers, data=body, timeout=10).status_code
    except requests.ConnectionError:
        return None  # the worker died with the request


def test_a_photo_that_kills_its_worker_fails_as_crashed_after_the_attempts_allowed(
    crashing_stage, client
):
    answers = []
    for _ in range(3):
        answers.append(post(crashing_stage))
        time.sleep(0.5)  # the lease of the dead attempt lapses; gunicorn boots a new worker
    assert answers[:2] == [None, None]
    assert answers[2] == 200
    status = StatusReader(client).user_status("ann")
    assert (status.counts["thumbnails_failed"], status.failures[0]["reason"]) == (1, "crashed")


def test_a_healthy_photo_is_processed_by_the_worker_that_replaced_a_dead_one(
    crashing_stage, client
):
    post(crashing_stage)
    time.sleep(0.5)
    healthy = PhotoRef("photos", "ann/fine.jpg", "v1", "ann")
    assert post(crashing_stage, healthy) == 200
    assert StatusReader(client).user_status("ann").counts["thumbnails_done"] == 1
