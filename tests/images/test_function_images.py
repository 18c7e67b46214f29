"""Issue #11: every function image, built as `make images` builds it, starts as its Knative
Service runs it (the Service's env with this machine's secrets and endpoints, uid 10001,
read-only root filesystem with tmpfs where the Service mounts emptyDirs, the port from PORT),
answers /healthz and does its job over HTTP: a CloudEvent in, the reply out. The broker's OIDC
token is checked as in the cluster (EVENT_AUTH_* from the Services, keys from a JWKS here).
Run by `make test-images`; `make test` leaves them out (marker `images`)."""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid

import jwt
import pytest
import requests
from PIL import Image

from devstack import b2_sender
from devstack.sample_photos import sample_photo
from functions.common.events import (
    OBJECT_CREATED,
    PhotoRef,
    binary_http,
    new_event,
    parse_event,
    photo_data,
)
from functions.common.pipeline import PIPELINE
from functions.status.app import DEAD_LETTER_PATH
from tests.images.conftest import BUCKET, JWT_SECRET, UID, WEBHOOK_SECRET, Backends, Container
from tests.knative_manifests import find, knative_service, literal_env, rendered

EMBEDDING_CREATED = PIPELINE["embed"].created
THUMBNAIL_CREATED = PIPELINE["thumbnail"].created

pytestmark = pytest.mark.images

CONFIG = find(rendered(), "v1", "ConfigMap", "photo-pipeline")["data"]


def sender_token(backends: Backends, service_name: str, trigger: str) -> str:
    """The broker's OIDC token for a delivery to `service_name`, as Trigger `trigger`."""
    env = literal_env(knative_service(service_name))
    now = int(time.time())
    claims = {
        "iss": CONFIG["EVENT_AUTH_ISSUER"],
        "aud": env["EVENT_AUTH_AUDIENCE"],
        "sub": f"system:serviceaccount:photos:{trigger}-oidc-eventing.knative.dev-trigger",
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, backends.sender_key, algorithm="RS256", headers={"kid": "k1"})


def deliver(url: str, event, token: str) -> requests.Response:
    headers, body = binary_http(event)
    headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, headers=headers, data=body, timeout=60)


def uploaded_photo(backends: Backends, user_id: str) -> PhotoRef:
    """A sample photo (two synthetic faces) put in the bucket, as the app uploads it."""
    key = f"{user_id}/photos/{uuid.uuid4().hex}.jpg"
    data = sample_photo(seed=7, faces=2, size=(1200, 800))
    stored = backends.s3_client().put_object(Bucket=BUCKET, Key=key, Body=data)
    return PhotoRef(BUCKET, key, stored["VersionId"], user_id, size=len(data))


def lambda_events(backends: Backends, key: str) -> list[str]:
    calls = requests.get(f"{backends.lambda_}/_invocations", timeout=5).json()
    return [call["payload"]["event"] for call in calls if call["payload"]["key"] == key]


def user_token(user_id: str) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "iss": CONFIG["JWT_ISSUER"],
        "aud": CONFIG["JWT_AUDIENCE"],
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"typ": "JWT"})


@pytest.fixture(scope="module")
def thumbnail(start_service) -> Container:
    return start_service("thumbnail")


@pytest.fixture(scope="module")
def embed(start_service, test_pack_root) -> Container:
    """The embed image without a baked pack, the TEST pack mounted read-only at MODEL_ROOT."""
    model_root = literal_env(knative_service("embed"))["MODEL_ROOT"]
    return start_service("embed", options=["--volume", f"{test_pack_root}:{model_root}:ro"])


@pytest.fixture(scope="module")
def status(start_service) -> Container:
    return start_service("status")


@pytest.fixture(scope="module")
def dead_letter(start_service) -> Container:
    return start_service("status-dead-letter")


@pytest.mark.parametrize("image", ["thumbnail", "embed", "status", "b2-receiver"])
def test_image_runs_as_uid_10001_with_gunicorn_on_port_by_default(images, image):
    inspect = ["docker", "image", "inspect", "--format", "{{json .Config}}", images[image]]
    config = json.loads(subprocess.run(inspect, capture_output=True, text=True).stdout)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Cmd"][:3] == ["gunicorn", "-c", "functions/common/gunicorn_conf.py"]
    assert "PORT=8080" in config["Env"]


def test_thumbnail_image_replies_thumbnail_created_for_a_photo_in_the_bucket(thumbnail, backends):
    photo = uploaded_photo(backends, "ann")
    event = new_event(OBJECT_CREATED, "/image-test", photo, photo_data(photo))

    reply = deliver(thumbnail.url, event, sender_token(backends, "thumbnail", "thumbnail"))

    assert reply.status_code == 200, reply.text
    answer = parse_event(reply.headers, reply.content)
    assert answer["type"] == THUMBNAIL_CREATED
    thumbnail_key = CONFIG["THUMBNAIL_KEY_TEMPLATE"].format(key=photo.key)
    stored = backends.s3_client().get_object(Bucket=BUCKET, Key=thumbnail_key)
    assert stored["ContentType"] == "image/jpeg"
    assert THUMBNAIL_CREATED in lambda_events(backends, photo.key)


def test_thumbnail_image_decodes_a_webp_already_scaled_with_its_libvips(thumbnail, backends):
    # pyvips (built from its sdist in the image) and pyvips-binary's libvips, as uid 10001 on the
    # read-only root filesystem: 1632x1224 is decoded at 400x300, as sharp has libwebp do.
    webp = io.BytesIO()
    Image.open(io.BytesIO(sample_photo(seed=3, faces=1, size=(1632, 1224)))).save(webp, "WEBP")
    key = f"bea/photos/{uuid.uuid4().hex}.webp"
    stored = backends.s3_client().put_object(Bucket=BUCKET, Key=key, Body=webp.getvalue())
    photo = PhotoRef(BUCKET, key, stored["VersionId"], "bea", size=len(webp.getvalue()))
    event = new_event(OBJECT_CREATED, "/image-test", photo, photo_data(photo))

    reply = deliver(thumbnail.url, event, sender_token(backends, "thumbnail", "thumbnail"))

    assert reply.status_code == 200, reply.text
    assert parse_event(reply.headers, reply.content)["type"] == THUMBNAIL_CREATED
    thumbnail_key = CONFIG["THUMBNAIL_KEY_TEMPLATE"].format(key=key)
    made = backends.s3_client().get_object(Bucket=BUCKET, Key=thumbnail_key)["Body"].read()
    assert Image.open(io.BytesIO(made)).size == (400, 300)


def test_embed_image_with_the_test_pack_replies_embedding_created_for_a_thumbnail(
    thumbnail, embed, backends
):
    photo = uploaded_photo(backends, "bea")
    created = new_event(OBJECT_CREATED, "/image-test", photo, photo_data(photo))
    reply = deliver(thumbnail.url, created, sender_token(backends, "thumbnail", "thumbnail"))
    thumbnail_event = parse_event(reply.headers, reply.content)

    reply = deliver(embed.url, thumbnail_event, sender_token(backends, "embed", "embed"))

    assert reply.status_code == 200, reply.text
    answer = parse_event(reply.headers, reply.content)
    assert answer["type"] == EMBEDDING_CREATED
    assert EMBEDDING_CREATED in lambda_events(backends, photo.key)


def test_stage_image_refuses_an_event_without_the_brokers_token(thumbnail, backends):
    photo = uploaded_photo(backends, "cal")
    headers, body = binary_http(new_event(OBJECT_CREATED, "/image-test", photo, photo_data(photo)))

    reply = requests.post(thumbnail.url, headers=headers, data=body, timeout=30)

    assert reply.status_code == 401


def test_status_image_answers_a_users_status_to_their_token(status):
    headers = {"Authorization": f"Bearer {user_token('dee')}"}

    reply = requests.get(f"{status.url}/v1/status", headers=headers, timeout=10)

    assert reply.status_code == 200, reply.text
    assert reply.json()["phase"] == "idle"


def test_dead_letter_image_marks_a_dead_lettered_photo_failed(dead_letter, status, backends):
    photo = uploaded_photo(backends, "eve")
    event = new_event(OBJECT_CREATED, "/image-test", photo, photo_data(photo))
    event["knativeerrorcode"] = "503"
    token = sender_token(backends, "status-dead-letter", "thumbnail")

    reply = deliver(f"{dead_letter.url}{DEAD_LETTER_PATH}", event, token)

    assert reply.status_code == 200, reply.text
    assert "failed" in reply.json()["recorded"]
    headers = {"Authorization": f"Bearer {user_token('eve')}"}
    counts = requests.get(f"{status.url}/v1/status", headers=headers, timeout=10).json()["counts"]
    assert counts["thumbnails_failed"] == 1, counts


def test_receiver_image_publishes_a_signed_webhook_to_its_sink(start_service, event_sink, backends):
    sink = event_sink()
    receiver = start_service("b2-receiver", env={"K_SINK": sink.url})
    photo = uploaded_photo(backends, "fay")
    webhook = b2_sender.object_created(BUCKET, photo.key, photo.size, photo.version_id)

    reply = b2_sender.deliver(receiver.url, [webhook], WEBHOOK_SECRET)

    assert reply.status_code == 200, reply.text
    (received,) = sink.wait_for(1, timeout_s=30)
    assert received.event["type"] == OBJECT_CREATED
    assert received.event.data["key"] == photo.key


def test_receiver_image_refuses_a_webhook_with_a_wrong_signature(start_service, event_sink):
    receiver = start_service("b2-receiver", env={"K_SINK": event_sink().url})
    webhook = b2_sender.object_created(BUCKET, "gus/photos/a.jpg", 10, "v1")

    reply = b2_sender.deliver(receiver.url, [webhook], "not-the-secret-" * 3)

    assert reply.status_code == 401
