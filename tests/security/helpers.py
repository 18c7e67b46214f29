"""Real HTTP for the security tests: raw requests the usual clients would not send."""

from __future__ import annotations

import contextlib
import re
import socket
from urllib.parse import urlsplit

import pytest

from eventing.receiver import create_app
from functions.common.config import ReceiverSettings
from functions.common.photo_store import PhotoStore
from functions.common.seen_events import SeenEvents

WEBHOOK_SECRET = "s3cret"
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def receiver_settings(sink_url: str = "http://127.0.0.1:9", **overrides) -> ReceiverSettings:
    fields = {
        "signing_secrets": (WEBHOOK_SECRET,),
        "sink_url": sink_url,
        "user_id_pattern": re.compile(r"^(?P<user_id>[^/]+)/"),
        "image_extensions": frozenset({"jpg"}),
        "thumbnail_key_template": "thumbnails/{key}.jpg",
        **overrides,
    }
    return ReceiverSettings(**fields)


@pytest.fixture
def receiver(serve, redis_client):
    """A receiver over real HTTP whose broker cannot be reached."""
    app = create_app(receiver_settings(), PhotoStore(redis_client), SeenEvents(redis_client, 60))
    return serve(app)


def raw_exchange(url: str, head: str, body: bytes = b"", timeout_s: float = 5) -> bytes:
    """Send `head` (request line and headers, without the blank line) and `body` as they are,
    and return what the server answers before it closes or `timeout_s` passes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n")
        with contextlib.suppress(OSError):  # closed on us: its answer may still be there
            sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
