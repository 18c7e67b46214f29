"""CloudEvents about photos whose keys are named as users name files: every key survives as a
binary-mode HTTP header, and travels exactly in the event's data and the Lambda's payload."""

import json
import re
import unicodedata
from urllib.parse import unquote

import pytest

from functions.common.events import (
    OBJECT_CREATED,
    USER_ID_EXTENSION,
    PhotoRef,
    binary_http,
    header_safe,
    lambda_payload,
    new_event,
    parse_event,
    photo_data,
)

NFD = "ann/Cafe\u0301.jpg"
NFC = "ann/Caf\u00e9.jpg"
# Every valid B2 key: 4 + 3 * 338 + 2 + 4 = 1024 bytes of UTF-8, B2's limit.
LONGEST = "ann/" + "写" * 338 + "ab.jpg"
KEYS = [
    "ann/写真.jpg",
    "ann/🎉 party.jpg",
    NFD,
    NFC,
    "ann/100% real+fun.jpg",
    'ann/"quoted".jpg',
    LONGEST,
]
# CloudEvents HTTP binding 1.0.2 §3.1.3.2: printable ASCII but space, `"` and `%` go unencoded.
SAFE = {chr(code) for code in range(0x21, 0x7F)} - {" ", '"', "%"}
PERCENT_ENCODED = re.compile(r"(?:[!#$&-~]|%[0-9A-F]{2})*")


def event_for(key, user_id="ann"):
    photo = PhotoRef("photos", key, "v1", user_id)
    return new_event(OBJECT_CREATED, "b2://photos", photo, photo_data(photo))


def is_percent_encoded(value):
    return PERCENT_ENCODED.fullmatch(value) is not None


def test_the_longest_key_is_exactly_b2s_limit():
    assert len(LONGEST.encode()) == 1024


def test_nfc_and_nfd_keys_are_distinct_and_kept_as_they_are():
    assert unicodedata.normalize("NFC", NFD) == NFC
    assert NFD != NFC
    assert event_for(NFD)["subject"] != event_for(NFC)["subject"]


@pytest.mark.parametrize("key", KEYS)
def test_the_subject_is_the_key_percent_encoded_as_utf8_per_the_http_binding(key):
    subject = event_for(key)["subject"]
    assert is_percent_encoded(subject)
    assert unquote(subject, errors="strict") == key


@pytest.mark.parametrize("user_id", ["ann", "ユーザー", "ann marie", "100%"])
def test_the_userid_extension_is_the_user_id_percent_encoded(user_id):
    value = event_for(f"{user_id}/a.jpg", user_id)[USER_ID_EXTENSION]
    assert is_percent_encoded(value)
    assert unquote(value) == user_id


def test_a_plain_key_is_its_own_subject():
    assert event_for("ann/trip/IMG_0001.JPG")["subject"] == "ann/trip/IMG_0001.JPG"


@pytest.mark.parametrize("key", KEYS)
def test_every_binary_mode_header_is_printable_ascii(key):
    headers, _ = binary_http(event_for(key))
    for value in headers.values():
        assert all(0x20 <= ord(char) < 0x7F for char in value), value


def test_the_sdk_does_not_encode_again_so_the_header_is_the_attribute():
    event = event_for("ann/100% real.jpg")
    headers, _ = binary_http(event)
    assert headers["ce-subject"] == event["subject"] == "ann/100%25%20real.jpg"


@pytest.mark.parametrize("key", KEYS)
def test_a_parsed_event_carries_the_exact_key_in_its_data_and_the_same_subject(key):
    event = event_for(key)
    parsed = parse_event(*binary_http(event))
    assert PhotoRef.from_data(parsed.data).key == key
    assert parsed["subject"] == event["subject"]


@pytest.mark.parametrize("key", KEYS)
def test_the_lambda_payload_carries_the_exact_key_through_json(key):
    payload = lambda_payload("thumbnail.created", PhotoRef("photos", key, "v1", "ann"))
    assert json.loads(json.dumps(payload, separators=(",", ":")))["key"] == key


def test_header_safe_leaves_every_safe_character_alone():
    text = "".join(sorted(SAFE))
    assert header_safe(text) == text
