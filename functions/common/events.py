"""CloudEvent payloads exchanged between the pipeline's stages, and HTTP helpers."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from cloudevents.v1.conversion import to_binary
from cloudevents.v1.http import CloudEvent, from_http

from functions.common.lanes import LANE_EXTENSION, Lane

# B2's upload, the event the pipeline starts from; each stage's own are in pipeline.toml.
OBJECT_CREATED = "com.backblaze.b2.object.created"

USER_ID_EXTENSION = "userid"
# B2's (and S3's) longest object key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024

# CloudEvents HTTP binding 1.0.2 §3.1.3.2: printable ASCII but space, `"` and `%` goes unencoded.
_HEADER_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in ' "%')


@dataclass(frozen=True)
class PhotoRef:
    """Which uploaded object an event is about; the data of `object.created`."""

    bucket: str
    key: str
    version_id: str | None
    user_id: str
    size: int | None = None
    uploaded_at: float | None = None

    @property
    def photo_id(self) -> str:
        """Identity used for idempotent status counting: the object version."""
        return f"{self.key}@{self.version_id}" if self.version_id else self.key

    @classmethod
    def from_data(cls, data: Any) -> PhotoRef:
        """The photo an event's data names; TypeError unless it names one with strings."""
        if not isinstance(data, dict):
            raise TypeError("the event's data is not a JSON object")
        for name in ("bucket", "key", "user_id"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise TypeError(f"the event's data needs a non-empty string {name!r}")
        if not isinstance(data.get("version_id"), (str, type(None))):
            raise TypeError("the event's version_id must be a string")
        return cls(
            bucket=data["bucket"],
            key=data["key"],
            version_id=data.get("version_id"),
            user_id=data["user_id"],
            size=data.get("size"),
            uploaded_at=data.get("uploaded_at"),
        )


def new_event(
    event_type: str,
    source: str,
    photo: PhotoRef,
    data: dict[str, Any],
    event_id: str | None = None,
    lane: Lane = Lane.INTERACTIVE,
) -> CloudEvent:
    """A CloudEvent about `photo` in `lane` (functions/common/lanes.py): subject is the object
    key, `userid` extension set, both `header_safe`, so that they survive as binary-mode HTTP
    headers. They label the event; whoever needs the key or the user reads them from the
    data, where they travel exactly."""
    attributes = {
        "id": event_id or str(uuid.uuid4()),
        "type": event_type,
        "source": source,
        "subject": header_safe(photo.key),
        USER_ID_EXTENSION: header_safe(photo.user_id),
        LANE_EXTENSION: str(lane),
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes, data)


def header_safe(text: str) -> str:
    """`text` percent-encoded as UTF-8 per the CloudEvents HTTP binding 1.0.2 §3.1.3.2, so any
    key is a valid HTTP header value; `urllib.parse.unquote` gives `text` back.

    Encoded in the attribute itself: neither this SDK (cloudevents.v1) nor Knative's broker
    (sdk-go) encodes or decodes header values, so the attribute crosses every hop unchanged.
    Plain keys (printable ASCII without space, `"` or `%`) are left as they are."""
    return quote(text, safe=_HEADER_SAFE)


def photo_data(photo: PhotoRef, **extra: Any) -> dict[str, Any]:
    """Event data: the photo reference plus stage-specific fields."""
    return {**{k: v for k, v in asdict(photo).items() if v is not None}, **extra}


def lambda_payload(event: str, photo: PhotoRef, **fields: Any) -> dict[str, Any]:
    """An invocation of the database Lambda: which event, about which photo version, and the
    stage's results. `idempotency_key` names the photo version and the stage's event: a
    repeated invocation (delivery is at least once) carries the same one, so the Lambda can
    ignore it."""
    return {
        "event": event,
        "idempotency_key": f"{photo.photo_id}|{event}",
        "bucket": photo.bucket,
        "key": photo.key,
        "version_id": photo.version_id,
        "user_id": photo.user_id,
        **fields,
    }


def parse_event(headers: Any, body: bytes) -> CloudEvent:
    """Parse a binary- or structured-mode CloudEvent; raises ValueError when it is not one."""
    try:
        event = from_http(dict(headers), body)
    except Exception as exc:  # the SDK raises several unrelated types for malformed input
        raise ValueError(f"not a CloudEvent: {exc}") from exc
    if isinstance(event.data, (bytes, str)):
        try:
            event.data = json.loads(event.data)
        except ValueError as exc:
            raise ValueError("CloudEvent data is not JSON") from exc
    return event


def binary_http(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of `event` in binary content mode, as Knative delivers events."""
    headers, body = to_binary(event)
    return dict(headers), body
