"""Fixtures shared by the suite: a real redis-server, WSGI apps served over real HTTP, and the
TEST model pack."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, request
from werkzeug.serving import make_server

from devstack.make_test_model_pack import build_pack
from devstack.stack import Processes
from functions.common.events import parse_event
from functions.common.photo_store import PhotoStore
from functions.status.status_reader import StatusReader
from tests.stack_fixtures import stack  # noqa: F401 - the session-wide local stack


@pytest.fixture(scope="session")
def test_model_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TEST model pack (not buffalo_l), at <root>/models/buffalo_l as FaceAnalysis expects."""
    return build_pack(tmp_path_factory.mktemp("insightface") / "models" / "buffalo_l")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway redis-server on a free port, shared by the whole session."""
    with Processes(tmp_path_factory.mktemp("redis")) as processes:
        yield processes.redis()


@pytest.fixture
def redis_client(redis_server: str) -> redis.Redis:
    """A client of the session's redis-server, emptied for this test; answers strings."""
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    return client


@pytest.fixture
def reader(store: PhotoStore) -> StatusReader:
    """The status function's reader of what `store`, the module's PhotoStore, wrote."""
    return StatusReader(store.client, store.settings)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but never listened on for the whole test: connecting is refused, and no
    server started meanwhile can take it (a port merely free at lookup time could be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Serve WSGI apps over real HTTP (HTTPS with an `ssl_context`), each in its own thread;
    returns each app's base URL."""
    servers = []

    def start(app: Any, ssl_context: ssl.SSLContext | None = None) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
        # A short poll interval makes shutdown at teardown quick.
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    event: Any
    at: float


class EventSink:
    """A CloudEvent subscriber: records every event POSTed to it and answers with `respond`."""

    def __init__(self, respond: Callable[[Any], Any] | None = None) -> None:
        self.url = ""
        self._respond = respond or (lambda event: ("", 200))
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self.app = Flask("event_sink")
        self.app.add_url_rule("/", "root", self._receive, methods=["POST"])
        self.app.add_url_rule("/<path:path>", "path", self._receive, methods=["POST"])

    def _receive(self, path: str = "") -> Any:
        event = parse_event(request.headers, request.get_data())
        with self._changed:
            self._received.append(
                Received("/" + path, dict(request.headers), event, time.monotonic())
            )
            self._changed.notify_all()
        return self._respond(event)

    @property
    def received(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout_s: float = 5) -> list[Received]:
        """The first `count` deliveries, once they have arrived."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._received) >= count, timeout_s):
                raise AssertionError(f"{len(self._received)} of {count} events after {timeout_s} s")
            return list(self._received[:count])


@pytest.fixture
def event_sink(serve: Callable[..., str]) -> Callable[..., EventSink]:
    """Start an EventSink over real HTTP: `event_sink(respond=...)`; over HTTPS with
    `ssl_context=...`."""

    def start(
        respond: Callable[[Any], Any] | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> EventSink:
        sink = EventSink(respond)
        sink.url = serve(sink.app, ssl_context)
        return sink

    return start
