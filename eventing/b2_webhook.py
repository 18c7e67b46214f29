"""Backblaze B2 Event Notifications: signature check and payload parsing (no I/O).

B2 POSTs `{"events": [...]}` (up to 50 events) with the header
`X-Bz-Event-Notification-Signature: v1=<hex HMAC-SHA256 of the raw body>`, keyed by the
notification rule's signing secret. Each event carries accountId, bucketId, bucketName,
eventId, eventTimestamp (ms), eventType, eventVersion, matchedRuleName, objectName,
objectSize and objectVersionId. The receiver refuses unsigned requests: signing is
optional in B2, but the receiver never runs without a secret (config.ReceiverSettings).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from functions.common.config import ReceiverSettings
from functions.common.events import MAX_KEY_BYTES, PhotoRef
from functions.common.metrics import RECEIVER_EVENTS_IGNORED

SIGNATURE_HEADER = "X-Bz-Event-Notification-Signature"
OBJECT_CREATED_PREFIX = "b2:ObjectCreated:"

_SIGNATURE_VERSION = "v1"
# B2 sends at most this many events in one notification.
MAX_EVENTS = 50
# B2 refuses these in object names; a key holding one cannot be an upload.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
# Reasons that are the bucket's normal traffic, logged at INFO rather than WARNING.
_EXPECTED = frozenset({"not_upload", "thumbnail", "not_image"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """One kept `b2:ObjectCreated:*` event: the photo and the B2 event it came from."""

    event_id: str
    event_type: str
    photo: PhotoRef


@dataclass(frozen=True)
class Notification:
    """A parsed webhook request: the uploads to publish and how many events were ignored."""

    uploads: tuple[Upload, ...]
    ignored: int


class TooManyEvents(ValueError):
    """A notification holding more events than B2 ever sends (answered 413)."""


class IgnoredEvent(Exception):
    """An event that reports no upload of our photos; `reason` labels the ignored metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True when any `v1=` entry of `header` is the HMAC of `body` under any of `secrets`.

    With no secrets configured no request verifies: unsigned is never the default.
    """
    if not (secrets and header):
        return False
    given = _signatures(header)
    expected = [body_hmac(secret, body) for secret in secrets]
    return any(hmac.compare_digest(digest, signature) for digest in expected for signature in given)


def parse_notification(body: bytes, settings: ReceiverSettings) -> Notification:
    """The uploads of our photos in `body`; ValueError when `body` is not JSON or has no
    `events` list, TooManyEvents when it holds more than B2's MAX_EVENTS. Any other event
    (malformed, another kind, a key that cannot be one of our photos) is logged, counted in
    `receiver_events_ignored_total` and ignored: rejecting the whole batch would lose its good
    uploads, and B2 would only send the same event again."""
    events = _events(body)
    uploads = []
    for index, event in enumerate(events):
        try:
            uploads.append(_upload(event, settings))
        except IgnoredEvent as ignored:
            level = logging.INFO if ignored.reason in _EXPECTED else logging.WARNING
            log.log(level, "ignoring event %d of the notification (%s)", index, ignored)
            RECEIVER_EVENTS_IGNORED.labels(ignored.reason).inc()
    return Notification(uploads=tuple(uploads), ignored=len(events) - len(uploads))


def _signatures(header: str) -> list[str]:
    signatures = []
    for entry in header.split(","):
        version, _, signature = entry.strip().partition("=")
        if version == _SIGNATURE_VERSION and signature:
            signatures.append(signature.strip().lower())
    return signatures


def body_hmac(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body, keyed by a rule's signing secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _events(body: bytes) -> list[Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"notification body is not JSON: {exc}") from exc
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise ValueError("notification body has no `events` list")
    if len(events) > MAX_EVENTS:
        raise TooManyEvents(f"{len(events)} events in one notification, over B2's {MAX_EVENTS}")
    return events


def _upload(event: Any, settings: ReceiverSettings) -> Upload:
    """The upload `event` reports; IgnoredEvent when it reports none of our photos."""
    if not isinstance(event, dict) or not isinstance(event.get("eventType"), str):
        raise IgnoredEvent("malformed", "not an object with an eventType")
    event_type = event["eventType"]
    if not event_type.startswith(OBJECT_CREATED_PREFIX):
        raise IgnoredEvent("not_upload", event_type)
    key = _field(event, "objectName", str)
    _check_b2_name(key)
    _check_photo_key(key, settings)
    match = settings.user_id_pattern.search(key)
    if match is None or not match.group("user_id"):
        raise IgnoredEvent("outside_layout", f"no user id in {key!r} ({settings.user_id_pattern})")
    photo = PhotoRef(
        bucket=_field(event, "bucketName", str),
        key=key,
        version_id=_field(event, "objectVersionId", str, required=False),
        user_id=match.group("user_id"),
        size=_field(event, "objectSize", int, required=False),
        uploaded_at=_field(event, "eventTimestamp", (int, float)) / 1000,
    )
    return Upload(event_id=_field(event, "eventId", str), event_type=event_type, photo=photo)


def _check_b2_name(key: str) -> None:
    """IgnoredEvent unless `key` is a name B2 allows: UTF-8 of at most 1024 bytes, with no
    control character or backslash."""
    try:
        size = len(key.encode())
    except UnicodeEncodeError as exc:
        raise IgnoredEvent("invalid_character", f"{key!r} is not UTF-8") from exc
    if size > MAX_KEY_BYTES:
        raise IgnoredEvent("too_long", f"{key[:64]!r}… is {size} bytes, over {MAX_KEY_BYTES}")
    if _FORBIDDEN.search(key):
        raise IgnoredEvent("invalid_character", f"{key!r} holds a control character or \\")


def _check_photo_key(key: str, settings: ReceiverSettings) -> None:
    """IgnoredEvent unless `key` can name one of our photos: no empty, `.` or `..` segment,
    not a thumbnail, an image extension."""
    segments = key.split("/")
    if "" in segments:
        raise IgnoredEvent("empty_segment", f"{key!r} has an empty path segment")
    if "." in segments or ".." in segments:
        raise IgnoredEvent("dot_segment", f"{key!r} has a `.` or `..` path segment")
    if key.startswith(settings.thumbnail_prefix):
        raise IgnoredEvent("thumbnail", f"{key!r} is a thumbnail")
    if PurePosixPath(key).suffix.lower().lstrip(".") not in settings.image_extensions:
        raise IgnoredEvent("not_image", f"{key!r} has no image extension")


def _field(
    event: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
    value = event.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise IgnoredEvent("malformed", f"event {event.get('eventId')!r} has no valid {name}")
    return value
