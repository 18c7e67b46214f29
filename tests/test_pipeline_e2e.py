"""End to end on the real local stack: signed B2 webhook → broker → thumbnail → embed → status.

Every part is a real process speaking its production protocol (redis-server, moto's S3 server
through boto3, the Lambda Invoke API, CloudEvents over HTTP). Faces come from the generated
TEST model pack, which detects the synthetic markers that `sample_photo` draws.
"""

import io
import uuid

import pytest
import requests
from PIL import Image

from devstack.sample_photos import sample_photo
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.thumbnail.imaging import thumbnail_size
from functions.thumbnail.service import thumbnail_key
from functions.thumbnail.settings import ThumbnailSettings
from tests.stack_fixtures import (
    broker_stats,
    deliver,
    lambda_invocations,
    status,
    upload,
    wait_until_idle,
)

SETTINGS = ThumbnailSettings()


@pytest.fixture(scope="module")
def batch(stack):
    """One signed webhook batch for two users: ann (one face; two faces in a portrait photo
    stored landscape with EXIF orientation 6), bob (no face)."""
    photos = {
        "ann/photos/one-face.jpg": (sample_photo(seed=1, faces=1), 1),
        "ann/photos/two-faces-rotated.jpg": (
            sample_photo(seed=2, faces=2, size=(2000, 3000), orientation=6),
            2,
        ),
        "bob/photos/landscape.jpg": (sample_photo(seed=3, faces=0), 0),
    }
    events = [upload(stack, key, data) for key, (data, _) in photos.items()]
    response = deliver(stack, events)
    assert response.status_code == 200, response.text
    finals = {user: wait_until_idle(stack, user, count) for user, count in (("ann", 2), ("bob", 1))}
    stack.wait_until_quiet()
    return {"photos": photos, "events": events, "status": finals}


def test_every_photo_gets_a_thumbnail_with_sharp_dimensions(stack, batch):
    s3 = stack.s3()
    for key in batch["photos"]:
        payload = next(
            p for p in lambda_invocations(stack, key) if p["event"] == "thumbnail.created"
        )
        stored = s3.get_object(
            Bucket="photos",
            Key=thumbnail_key(SETTINGS.key_template, PhotoRef("photos", key, None, "x")),
        )
        image = Image.open(io.BytesIO(stored["Body"].read()))
        original = payload["original"]
        expected = thumbnail_size(original["width"], original["height"], 400, 400)
        assert image.size == expected
        assert stored["ContentType"] == "image/jpeg"


def test_a_rotated_photo_is_thumbnailed_upright(stack, batch):
    payload = next(
        p
        for p in lambda_invocations(stack, "ann/photos/two-faces-rotated.jpg")
        if p["event"] == "thumbnail.created"
    )
    assert payload["thumbnail"]["height"] > payload["thumbnail"]["width"]


def without_timings(payload):
    return {name: value for name, value in payload.items() if name != "timings_ms"}


def test_the_database_lambda_receives_the_same_thumbnail_and_embedding_payloads_per_photo(
    stack, batch
):
    for key, (_, faces) in batch["photos"].items():
        by_event = {}
        for payload in lambda_invocations(stack, key):
            by_event.setdefault(payload["event"], []).append(without_timings(payload))
        assert set(by_event) == {"thumbnail.created", "embedding.created"}
        for payloads in by_event.values():
            assert all(payload == payloads[0] for payload in payloads)
        embedding = by_event["embedding.created"][0]
        assert len(embedding["faces"]) == faces
        assert all(len(face["embedding"]) > 0 for face in embedding["faces"])


def test_the_thumbnail_payload_carries_the_originals_content_type(stack, batch):
    for key in batch["photos"]:
        payload = next(
            p for p in lambda_invocations(stack, key) if p["event"] == "thumbnail.created"
        )
        assert payload["content_type"] == "image/jpeg"


def test_status_reports_idle_with_exact_counts_per_user(batch):
    ann, bob = batch["status"]["ann"]["counts"], batch["status"]["bob"]["counts"]
    assert (ann["uploaded"], ann["thumbnails_done"], ann["embeddings_done"], ann["faces"]) == (
        2,
        2,
        2,
        3,
    )
    assert (bob["uploaded"], bob["thumbnails_done"], bob["embeddings_done"], bob["faces"]) == (
        1,
        1,
        1,
        0,
    )


def test_the_same_batch_delivered_twice_changes_no_count(stack, batch):
    assert deliver(stack, batch["events"]).status_code == 200
    stack.wait_until_quiet()
    assert status(stack, "ann")["counts"] == batch["status"]["ann"]["counts"]
    assert status(stack, "bob")["counts"] == batch["status"]["bob"]["counts"]


def test_a_photo_delivered_again_under_a_new_event_id_reaches_the_database_lambda_once(
    stack, batch
):
    again = [{**event, "eventId": str(uuid.uuid4())} for event in batch["events"]]
    assert deliver(stack, again).status_code == 200
    stack.wait_until_quiet()
    for event in batch["events"]:
        key, version = event["objectName"], event["objectVersionId"]
        keys = sorted(p["idempotency_key"] for p in lambda_invocations(stack, key))
        assert keys == [f"{key}@{version}|embedding.created", f"{key}@{version}|thumbnail.created"]


def test_a_forged_signature_is_refused_and_publishes_nothing(stack, batch):
    received_before = broker_stats(stack)["received"]
    event = upload(stack, "carol/photos/a.jpg", sample_photo(seed=4, faces=1))
    response = deliver(stack, [event], secret="not-the-secret")
    assert response.status_code == 401
    assert broker_stats(stack)["received"] == received_before
    assert status(stack, "carol")["counts"]["uploaded"] == 0


def test_a_corrupt_photo_ends_failed_with_its_reason_and_the_user_reaches_idle(stack):
    event = upload(stack, "dave/photos/broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    assert deliver(stack, [event]).status_code == 200
    final = wait_until_idle(stack, "dave", 1)
    assert final["counts"]["thumbnails_failed"] == 1
    assert final["failures"][0]["reason"] == "corrupt"


def test_a_thumbnail_key_never_triggers_processing(stack, batch):
    received_before = broker_stats(stack)["received"]
    event = upload(stack, "thumbnails/ann/photos/one-face.jpg", b"jpeg bytes")
    assert deliver(stack, [event]).status_code == 200
    assert broker_stats(stack)["received"] == received_before


def test_a_failing_database_lambda_is_retried_until_the_photo_is_processed(stack):
    requests.post(f"{stack.urls['lambda']}/_fail-next", json={"count": 2}, timeout=5)
    event = upload(stack, "erin/photos/a.jpg", sample_photo(seed=5, faces=1))
    assert deliver(stack, [event]).status_code == 200
    final = wait_until_idle(stack, "erin", 1)
    assert (final["counts"]["embeddings_done"], final["counts"]["thumbnails_failed"]) == (1, 0)


def test_only_the_cluster_local_status_process_takes_dead_letters(stack):
    photo = PhotoRef("photos", "frank/photos/a.jpg", None, "frank")
    event = new_event(OBJECT_CREATED, "/test", photo, photo_data(photo))
    event["knativeerrorcode"] = "503"
    headers, body = binary_http(event)
    public = requests.post(
        f"{stack.urls['status']}/v1/dead-letter", headers=headers, data=body, timeout=5
    )
    assert public.status_code == 404
    sink = requests.post(
        f"{stack.urls['status-dead-letter']}/v1/dead-letter", headers=headers, data=body, timeout=5
    )
    assert sink.status_code == 200
    assert status(stack, "frank")["failures"][0]["reason"] == "delivery_failed"


@pytest.mark.parametrize("stage", ["thumbnail", "embed"])
def test_a_stage_refuses_an_event_whose_photo_fields_are_not_strings(stack, stage):
    photo = PhotoRef("photos", "ann/a.jpg", None, "ann")
    event = new_event(OBJECT_CREATED, "/test", photo, {**photo_data(photo), "key": 7})
    headers, body = binary_http(event)
    response = requests.post(stack.urls[stage], data=body, headers=headers, timeout=10)
    assert response.status_code == 400
    assert "'key'" in response.json()["error"]
