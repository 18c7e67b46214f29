"""Which B2 webhooks are authentic, and which of their events become photos to process."""

import json
import re

import pytest
from prometheus_client import REGISTRY

from devstack.b2_sender import object_created, signature
from eventing.b2_webhook import TooManyEvents, parse_notification, verify_signature
from functions.common.config import ReceiverSettings

SETTINGS = ReceiverSettings(
    signing_secrets=("s3cret",),
    sink_url="http://127.0.0.1:9",
    user_id_pattern=re.compile(r"^(?P<user_id>[^/]+)/"),
    image_extensions=frozenset({"jpg", "jpeg", "png", "heic"}),
    thumbnail_key_template="thumbnails/{key}.jpg",
)
BODY = b'{"events": []}'


def notification(*events):
    return json.dumps({"events": list(events)}).encode()


def with_type(event_type, key="ann/a.jpg"):
    return {**object_created("photos", key, 10), "eventType": event_type}


def without(name, event):
    return {key: value for key, value in event.items() if key != name}


def test_a_body_signed_with_the_secret_verifies():
    assert verify_signature(BODY, signature(BODY, "s3cret"), ("s3cret",))


def test_a_body_signed_with_another_secret_does_not_verify():
    assert not verify_signature(BODY, signature(BODY, "guess"), ("s3cret",))


def test_a_tampered_body_does_not_verify():
    assert not verify_signature(BODY + b" ", signature(BODY, "s3cret"), ("s3cret",))


def test_a_missing_signature_does_not_verify_when_a_secret_is_configured():
    assert not verify_signature(BODY, None, ("s3cret",))


def test_a_list_of_signatures_verifies_when_one_entry_matches():
    header = f"v1={'0' * 64}, {signature(BODY, 's3cret')}"
    assert verify_signature(BODY, header, ("s3cret",))


def test_any_of_several_secrets_verifies_so_secrets_can_be_rotated():
    assert verify_signature(BODY, signature(BODY, "new"), ("old", "new"))


def test_an_entry_of_another_signature_version_is_not_accepted():
    header = signature(BODY, "s3cret").replace("v1=", "v2=")
    assert not verify_signature(BODY, header, ("s3cret",))


def test_nothing_verifies_when_no_secret_is_configured():
    assert not verify_signature(BODY, None, ())
    assert not verify_signature(BODY, signature(BODY, ""), ())


def test_each_upload_of_a_batch_becomes_a_photo_with_its_b2_event_id():
    events = [object_created("photos", f"ann/{n}.jpg", 100 + n) for n in range(3)]
    parsed = parse_notification(notification(*events), SETTINGS)
    assert [upload.event_id for upload in parsed.uploads] == [e["eventId"] for e in events]
    assert [upload.photo.key for upload in parsed.uploads] == [e["objectName"] for e in events]
    assert parsed.ignored == 0


def test_a_photo_carries_bucket_version_user_size_and_upload_time_in_seconds():
    event = object_created("photos", "ann/trip/a.jpg", 2048, version_id="4_zabc")
    upload = parse_notification(notification(event), SETTINGS).uploads[0]
    photo = upload.photo
    assert (photo.bucket, photo.key, photo.version_id) == ("photos", "ann/trip/a.jpg", "4_zabc")
    assert (photo.user_id, photo.size) == ("ann", 2048)
    assert photo.uploaded_at == event["eventTimestamp"] / 1000
    assert upload.event_type == "b2:ObjectCreated:Upload"


@pytest.mark.parametrize(
    "event_type",
    ["b2:ObjectCreated:Upload", "b2:ObjectCreated:MultipartUpload", "b2:ObjectCreated:Copy"],
)
def test_every_kind_of_object_creation_is_kept(event_type):
    parsed = parse_notification(notification(with_type(event_type)), SETTINGS)
    assert [upload.event_type for upload in parsed.uploads] == [event_type]


def test_image_extensions_match_whatever_their_case():
    parsed = parse_notification(notification(object_created("photos", "ann/IMG.JPG", 1)), SETTINGS)
    assert len(parsed.uploads) == 1


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            {"eventType": "b2:TestEvent", "eventId": "t", "bucketName": "photos"}, id="test event"
        ),
        pytest.param(with_type("b2:ObjectDeleted:Delete"), id="delete"),
        pytest.param(with_type("b2:HideMarkerCreated:Hide"), id="hide marker"),
        pytest.param(with_type("b2:SomethingNew:Happened"), id="unknown type"),
        pytest.param(object_created("photos", "ann/notes.txt", 1), id="not an image"),
        pytest.param(object_created("photos", "ann/no-extension", 1), id="no extension"),
        pytest.param(object_created("photos", "thumbnails/ann/a.jpg", 1), id="a thumbnail"),
        pytest.param(object_created("photos", "a.jpg", 1), id="no user id in the key"),
    ],
)
def test_events_that_are_not_uploaded_photos_are_ignored_and_counted(event):
    parsed = parse_notification(notification(event), SETTINGS)
    assert (parsed.uploads, parsed.ignored) == ((), 1)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="not JSON"),
        pytest.param(b"[]", id="not an object"),
        pytest.param(b"{}", id="no events"),
        pytest.param(b'{"events": {}}', id="events not a list"),
    ],
)
def test_a_body_that_is_not_a_notification_is_rejected(body):
    with pytest.raises(ValueError):
        parse_notification(body, SETTINGS)


@pytest.mark.parametrize(
    "malformed",
    [
        pytest.param("b2:ObjectCreated:Upload", id="event not an object"),
        pytest.param({"eventId": "x"}, id="event without a type"),
        pytest.param(without("eventId", object_created("p", "ann/a.jpg", 1)), id="no eventId"),
        pytest.param(
            without("objectName", object_created("p", "ann/a.jpg", 1)), id="no objectName"
        ),
        pytest.param(
            {**object_created("p", "ann/a.jpg", 1), "eventTimestamp": "soon"},
            id="timestamp not a number",
        ),
        pytest.param(
            {**object_created("p", "ann/a.jpg", 1), "objectSize": "big"},
            id="size not an integer",
        ),
    ],
)
def test_a_malformed_event_is_ignored_and_the_rest_of_its_batch_kept(malformed):
    good = [object_created("photos", f"ann/{n}.jpg", 1) for n in range(2)]
    parsed = parse_notification(notification(good[0], malformed, good[1]), SETTINGS)
    assert [upload.event_id for upload in parsed.uploads] == [e["eventId"] for e in good]
    assert parsed.ignored == 1


def test_an_empty_thumbnail_prefix_is_refused_so_the_loop_guard_cannot_be_off():
    with pytest.raises(ValueError, match="fixed prefix"):
        SETTINGS.replace(thumbnail_key_template="{key}.jpg")


@pytest.mark.parametrize("template", ["{user_id}/thumbs/{key_stem}.jpg", "{key}.thumb.jpg"])
def test_a_thumbnail_key_template_without_a_fixed_prefix_is_refused_at_load(monkeypatch, template):
    monkeypatch.setenv("THUMBNAIL_KEY_TEMPLATE", template)
    with pytest.raises(ValueError, match="THUMBNAIL_KEY_TEMPLATE must start with a fixed prefix"):
        ReceiverSettings.from_env()


# -- keys as users name files, and keys that cannot be one of our photos ----------------------

LONGEST = "ann/" + "写" * 338 + "ab.jpg"  # 1024 bytes of UTF-8: B2's limit


def ignored_count(reason):
    return REGISTRY.get_sample_value("receiver_events_ignored_total", {"reason": reason}) or 0


@pytest.mark.parametrize(
    "key",
    [
        "ann/写真.jpg",
        "ann/🎉 party.jpg",
        "ann/Cafe\u0301.jpg",
        "ann/Caf\u00e9.jpg",
        "ann/100% real+fun.jpg",
        "ann/.hidden.jpg",
        "ann/..double.jpg",
        LONGEST,
    ],
)
def test_a_key_named_as_users_name_files_is_kept_exactly(key):
    parsed = parse_notification(notification(object_created("photos", key, 1)), SETTINGS)
    assert [(upload.photo.key, upload.photo.user_id) for upload in parsed.uploads] == [(key, "ann")]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        pytest.param("ann/../bob/a.jpg", "dot_segment", id="dot-dot segment"),
        pytest.param("ann/./a.jpg", "dot_segment", id="dot segment"),
        pytest.param("../a.jpg", "dot_segment", id="dot-dot user"),
        pytest.param("ann//a.jpg", "empty_segment", id="empty segment"),
        pytest.param("/ann/a.jpg", "empty_segment", id="leading slash"),
        pytest.param("a.jpg", "outside_layout", id="no user folder"),
        pytest.param(LONGEST.replace("ab.jpg", "abc.jpg"), "too_long", id="1025 bytes"),
        pytest.param("ann/a\x01.jpg", "invalid_character", id="control character"),
        pytest.param("ann/a\nb.jpg", "invalid_character", id="newline"),
        pytest.param("ann\\a.jpg", "invalid_character", id="backslash"),
        pytest.param("ann/\ud800.jpg", "invalid_character", id="lone surrogate"),
        pytest.param("ann/notes.txt", "not_image", id="not an image"),
        pytest.param("thumbnails/ann/a.jpg", "thumbnail", id="a thumbnail"),
    ],
)
def test_a_key_that_cannot_be_one_of_our_photos_is_ignored_and_counted_by_reason(key, reason):
    before = ignored_count(reason)
    good = object_created("photos", "ann/good.jpg", 1)
    parsed = parse_notification(notification(object_created("photos", key, 1), good), SETTINGS)
    assert [upload.photo.key for upload in parsed.uploads] == ["ann/good.jpg"]
    assert parsed.ignored == 1
    assert ignored_count(reason) == before + 1


def test_a_user_id_pattern_capturing_nothing_is_outside_the_layout():
    settings = SETTINGS.replace(user_id_pattern=re.compile(r"^(?P<user_id>\d*)/?"))
    before = ignored_count("outside_layout")
    parsed = parse_notification(notification(object_created("photos", "ann/a.jpg", 1)), settings)
    assert (parsed.uploads, ignored_count("outside_layout")) == ((), before + 1)


def test_a_malformed_event_is_counted_as_malformed():
    before = ignored_count("malformed")
    parse_notification(
        notification(without("eventId", object_created("p", "ann/a.jpg", 1))), SETTINGS
    )
    assert ignored_count("malformed") == before + 1


def test_a_key_that_cannot_be_a_photo_is_logged_as_a_warning_with_its_reason(caplog):
    parse_notification(notification(object_created("photos", "ann/../a.jpg", 1)), SETTINGS)
    [record] = [r for r in caplog.records if r.name == "eventing.b2_webhook"]
    assert record.levelname == "WARNING"
    assert "dot_segment" in record.getMessage()


def test_a_batch_of_b2s_50_events_parses_and_one_more_is_too_many():
    events = [object_created("photos", f"ann/{n}.jpg", 1) for n in range(51)]
    assert (
        len(parse_notification(json.dumps({"events": events[:50]}).encode(), SETTINGS).uploads)
        == 50
    )
    with pytest.raises(TooManyEvents, match="51 events"):
        parse_notification(json.dumps({"events": events}).encode(), SETTINGS)
