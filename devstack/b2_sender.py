"""Sends Event Notification webhooks exactly as Backblaze B2 does (local tooling and tests).

B2 POSTs `{"events": [...]}` (up to 50 events) with the header
`X-Bz-Event-Notification-Signature: v1=<hex HMAC-SHA256 of the body, keyed by the rule's secret>`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests

from eventing.b2_webhook import SIGNATURE_HEADER, body_hmac


def object_created(
    bucket: str, key: str, size: int, version_id: str | None = None, rule: str = "photo-uploads"
) -> dict[str, Any]:
    """One `b2:ObjectCreated:Upload` event as B2 formats it; B2 versions every object, so
    pass the stored object's version id (a B2-shaped one is made up otherwise)."""
    return {
        "accountId": "e85c6a500333",
        "bucketId": "aea8c5bc362ef1fd8f1b0f1e",
        "bucketName": bucket,
        "eventId": str(uuid.uuid4()),
        "eventTimestamp": int(time.time() * 1000),
        "eventType": "b2:ObjectCreated:Upload",
        "eventVersion": 1,
        "matchedRuleName": rule,
        "objectName": key,
        "objectSize": size,
        "objectVersionId": version_id or f"4_z{uuid.uuid4().hex}_f1_d{int(time.time())}",
    }


def signature(body: bytes, secret: str) -> str:
    return "v1=" + body_hmac(secret, body)


def deliver(
    url: str, events: list[dict[str, Any]], secret: str, timeout_s: float = 10
) -> requests.Response:
    # Non-ASCII keys as raw UTF-8, not `\u` escapes: JSON allows both, the receiver reads both.
    body = json.dumps({"events": events}, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(body, secret)}
    return requests.post(url, data=body, headers=headers, timeout=timeout_s)


def deliver_until_taken(
    url: str, events: list[dict[str, Any]], secret: str, attempts: int = 4, backoff_s: float = 0.5
) -> requests.Response:
    """`deliver`, sent again as B2 sends a notification again when the receiver answers 5xx
    or cannot be reached, with a doubling pause; the last attempt's answer or error stands."""
    for attempt in range(attempts - 1):
        try:
            response = deliver(url, events, secret)
            if response.status_code < 500:
                return response
        except requests.ConnectionError:
            pass
        time.sleep(backoff_s * 2**attempt)
    return deliver(url, events, secret)
