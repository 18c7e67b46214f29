"""End to end on the real local stack: photos named as users name files (Japanese, emoji, NFD
accents, spaces, `%` and `+`, B2's longest key) get their thumbnail under the key derived from
their exact key, and the database Lambda hears of each under that exact key; and how that
thumbnail key is derived, B2's 1024-byte limit included."""

import hashlib
import json

import pytest

from devstack.b2_sender import object_created
from devstack.sample_photos import sample_photo
from eventing.b2_webhook import parse_notification
from functions.common.config import ReceiverSettings
from functions.common.events import PhotoRef
from functions.thumbnail.service import thumbnail_key
from functions.thumbnail.settings import ThumbnailSettings
from tests.stack_fixtures import deliver, lambda_invocations, upload, wait_until_idle

USER = "yuki"
KEYS = [
    f"{USER}/写真/夏休み.jpg",
    f"{USER}/🎉 party.jpg",
    f"{USER}/Cafe\u0301 au lait.jpg",  # NFD: "e" and a combining acute accent
    f"{USER}/Caf\u00e9 au lait.jpg",  # NFC: the same name as users see it, another photo
    f"{USER}/100% real+fun.jpg",
    f"{USER}/" + "写" * 338 + "a.jpg",  # 1024 bytes: its thumbnail key takes the long form
]
KEY_NAMES = ["japanese", "emoji-space", "nfd", "nfc", "percent-plus", "1024-bytes"]


@pytest.fixture(scope="module")
def processed(stack):
    assert len(KEYS[-1].encode()) == 1024
    events = [upload(stack, key, sample_photo(seed=n, faces=1)) for n, key in enumerate(KEYS)]
    response = deliver(stack, events)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(KEYS)
    final = wait_until_idle(stack, USER, len(KEYS))
    stack.wait_until_quiet()
    return final


def test_every_photo_is_thumbnailed_and_embedded(processed):
    counts = processed["counts"]
    assert (counts["uploaded"], counts["thumbnails_done"], counts["embeddings_done"]) == (6, 6, 6)


@pytest.mark.parametrize("key", KEYS, ids=KEY_NAMES)
def test_the_thumbnail_is_uploaded_under_the_key_derived_from_the_exact_key(stack, processed, key):
    expected = thumbnail_key(ThumbnailSettings().key_template, PhotoRef("photos", key, None, USER))
    [payload] = [p for p in lambda_invocations(stack, key) if p["event"] == "thumbnail.created"]
    assert payload["thumbnail"]["key"] == expected
    stored = stack.s3().get_object(Bucket=stack.config.bucket, Key=expected)
    assert stored["ContentType"] == "image/jpeg"


@pytest.mark.parametrize("key", KEYS, ids=KEY_NAMES)
def test_the_database_lambda_hears_of_each_stage_under_the_exact_key_and_user(
    stack, processed, key
):
    payloads = lambda_invocations(stack, key)
    assert {p["event"] for p in payloads} == {"thumbnail.created", "embedding.created"}
    assert {p["user_id"] for p in payloads} == {USER}


# -- thumbnail keys, derived from the exact key -------------------------------------------------


def default_thumbnail_key(key):
    return thumbnail_key(ThumbnailSettings().key_template, PhotoRef("photos", key, None, USER))


def test_nfc_and_nfd_names_get_their_own_thumbnails():
    assert default_thumbnail_key(KEYS[2]) != default_thumbnail_key(KEYS[3])


def test_a_derived_key_of_exactly_1024_bytes_keeps_the_template_form():
    key = f"{USER}/" + "a" * (1024 - len("thumbnails/yuki/.jpg") - len(".jpg")) + ".jpg"
    derived = default_thumbnail_key(key)
    assert (derived, len(derived.encode())) == (f"thumbnails/{key}.jpg", 1024)


def test_a_derived_key_over_1024_bytes_is_the_keys_hash_under_the_thumbnail_prefix():
    derived = default_thumbnail_key(KEYS[-1])
    digest = hashlib.sha256(KEYS[-1].encode()).hexdigest()
    assert derived == f"thumbnails/_long/{digest}.jpg"


def test_long_keys_differing_in_one_character_get_their_own_thumbnails():
    other = KEYS[-1].replace("a.jpg", "b.jpg")
    assert default_thumbnail_key(other) != default_thumbnail_key(KEYS[-1])


def test_the_long_form_is_under_the_prefix_the_receiver_ignores():
    event = object_created("photos", default_thumbnail_key(KEYS[-1]), 1)
    body = json.dumps({"events": [event]}).encode()
    assert parse_notification(body, ReceiverSettings.from_env()).uploads == ()
