"""Sends Event Notification webhooks exactly as Backblaze B2 does (local tooling and tests).

B2 POSTs `{"events": [...]}` (up to 50 events) with the header
`X-Bz-Event-Notification-Signature: v1=<hex HMAC-SHA256 of the body, keyed by the rule's secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import requests

SIGNATURE_HEADER = "X-Bz-Event-Notification-Signature"


def object_created(
    bucket: str, key: str, size: int, version_id: str, rule: str = "photo-uploads"
) -> dict[str, Any]:
    """One `b2:ObjectCreated:Upload` event as B2 formats it (B2 versions every object)."""
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
        "objectVersionId": version_id,
    }


def signature(body: bytes, secret: str) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    url: str, events: list[dict[str, Any]], secret: str, timeout_s: float = 10
) -> requests.Response:
    body = json.dumps({"events": events}).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(body, secret)}
    return requests.post(url, data=body, headers=headers, timeout=timeout_s)
