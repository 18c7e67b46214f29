"""Property-based tests of the parsers that read what the outside sends: B2's webhook body and
the CloudEvents a stage receives. Whatever comes in, they answer with their one declared error
(ValueError, TypeError for a photo reference), never anything else: a 500, a crash."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from eventing.b2_webhook import parse_notification
from functions.common.events import PhotoRef, parse_event
from tests.security.helpers import receiver_settings

SETTINGS = receiver_settings()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
B2_EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "eventType": st.sampled_from(["b2:ObjectCreated:Upload", "b2:ObjectDeleted"]) | st.text(),
        "objectName": st.text(max_size=80),
        "bucketName": st.text(max_size=12),
        "eventId": st.text(max_size=12),
        "eventTimestamp": st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
        "objectSize": st.integers() | st.none() | st.text(max_size=4),
        "objectVersionId": st.text(max_size=12) | st.none(),
    },
)
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_are_a_notification_or_a_value_error(body):
    with contextlib.suppress(ValueError):
        parse_notification(body, SETTINGS)


@FAST
@given(st.lists(B2_EVENTS | JSON_VALUES, max_size=8))
def test_any_batch_of_events_is_parsed_and_keeps_only_exact_keys_of_our_layout(events):
    notification = parse_notification(json.dumps({"events": events}).encode(), SETTINGS)
    sent = {event.get("objectName") for event in events if isinstance(event, dict)}
    for upload in notification.uploads:
        assert upload.photo.key in sent
        assert upload.photo.key.startswith(f"{upload.photo.user_id}/")
        assert ".." not in upload.photo.key.split("/")
    assert len(notification.uploads) + notification.ignored == len(events)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            ["ce-id", "ce-type", "ce-source", "ce-specversion", "content-type", "ce-subject"]
        ),
        st.text(max_size=20),
    ),
    st.binary(max_size=200),
)
def test_any_headers_and_body_are_a_cloudevent_or_a_value_error(headers, body):
    with contextlib.suppress(ValueError):
        parse_event(headers, body)


@FAST
@given(JSON_VALUES)
def test_any_event_data_is_a_photo_reference_or_a_type_error(data):
    try:
        photo = PhotoRef.from_data(data)
    except TypeError:
        return
    assert photo.key and photo.bucket and photo.user_id
