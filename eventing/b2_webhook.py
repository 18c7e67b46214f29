"""Backblaze B2 Event Notifications: signature check and payload parsing (no I/O).

B2 POSTs `{"events": [...]}` (up to 50 events) with the header
`X-Bz-Event-Notification-Signature: v1=<hex HMAC-SHA256 of the raw body>`, keyed by the
notification rule's signing secret. Each event carries accountId, bucketId, bucketName,
eventId, eventTimestamp (ms), eventType, eventVersion, matchedRuleName, objectName,
objectSize and objectVersionId.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from functions.common.config import ReceiverSettings
from functions.common.events import PhotoRef

SIGNATURE_HEADER = "X-Bz-Event-Notification-Signature"
OBJECT_CREATED_PREFIX = "b2:ObjectCreated:"

_SIGNATURE_VERSION = "v1"

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


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True when any `v1=` entry of `header` is the HMAC of `body` under any of `secrets`.

    With no secrets configured every request verifies (signing is optional in B2).
    """
    if not secrets:
        return True
    if not header:
        return False
    given = _signatures(header)
    expected = [body_hmac(secret, body) for secret in secrets]
    return any(hmac.compare_digest(digest, signature) for digest in expected for signature in given)


def parse_notification(body: bytes, settings: ReceiverSettings) -> Notification:
    """The uploads of image objects in `body`; ValueError when `body` is not JSON or has no
    `events` list. A malformed event is logged and ignored: rejecting the whole batch would
    lose its good uploads, and B2 would only send the same bad event again."""
    events = _events(body)
    uploads = []
    for index, event in enumerate(events):
        try:
            upload = _upload(event, settings)
        except ValueError as exc:
            log.warning("ignoring malformed event %d of the notification: %s", index, exc)
            continue
        if upload is not None:
            uploads.append(upload)
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
    return events


def _upload(event: Any, settings: ReceiverSettings) -> Upload | None:
    """The upload `event` reports; None for another kind of event or key; ValueError when
    the event is malformed."""
    if not isinstance(event, dict) or not isinstance(event.get("eventType"), str):
        raise ValueError("not an object with an eventType")
    event_type = event["eventType"]
    if not event_type.startswith(OBJECT_CREATED_PREFIX):
        return None
    key = _field(event, "objectName", str)
    if not _is_photo(key, settings):
        return None
    match = settings.user_id_pattern.search(key)
    if match is None:
        log.warning("ignoring %s: no user id in key (pattern %s)", key, settings.user_id_pattern)
        return None
    photo = PhotoRef(
        bucket=_field(event, "bucketName", str),
        key=key,
        version_id=_field(event, "objectVersionId", str, required=False),
        user_id=match.group("user_id"),
        size=_field(event, "objectSize", int, required=False),
        uploaded_at=_field(event, "eventTimestamp", (int, float)) / 1000,
    )
    return Upload(event_id=_field(event, "eventId", str), event_type=event_type, photo=photo)


def _is_photo(key: str, settings: ReceiverSettings) -> bool:
    if key.startswith(settings.thumbnail_prefix):
        return False
    return PurePosixPath(key).suffix.lower().lstrip(".") in settings.image_extensions


def _field(
    event: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
    value = event.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"event {event.get('eventId')!r} has no valid {name}")
    return value
