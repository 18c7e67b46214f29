"""A fault-injecting HTTP reverse proxy: LOCAL TOOLING AND TESTS ONLY (`make soak ARGS='--faults'`).

Forwards every request (any method, path, headers and body) to one upstream and streams the
answer back. The Host header goes through unchanged: a request signed with AWS SigV4 for the
proxy's address is forwarded exactly as signed (moto does not check signatures; S3 would).
`POST /_faults {"mode": ..., "seconds": N}` switches the proxy, for N seconds, to:
- `error`: every request is answered 503 without reaching the upstream;
- `timeout`: every request is held `--hold-s` seconds, longer than the clients' read timeouts,
  then its connection is closed unanswered; the upstream never sees it;
- `ok`: every request is forwarded (the mode when no window is open).
`GET /_faults` answers the mode in force and how many requests each mode has taken.

    python -m devstack.fault_proxy --port 9100 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

CONTROL_PATH = "/_faults"
MODES = ("ok", "error", "timeout")
DEFAULT_HOLD_S = 30.0  # longer than the functions' default S3 (20 s) and Lambda (10 s) timeouts
UPSTREAM_TIMEOUT_S = 60.0
CHUNK_BYTES = 64 * 1024
# Headers of one hop, not forwarded; `Expect: 100-continue` is answered by the proxy itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer"}
    | {"upgrade", "expect"}
)


class Faults:
    """The mode in force, until when, and how many requests each mode took."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mode, self._until = "ok", 0.0
        self._taken: Counter[str] = Counter()

    def open_window(self, mode: str, seconds: float) -> None:
        with self._lock:
            self._mode, self._until = mode, time.monotonic() + seconds

    def take(self) -> str:
        """The mode for a request arriving now, counted."""
        with self._lock:
            mode = self._mode if time.monotonic() < self._until else "ok"
            self._taken[mode] += 1
            return mode

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            left = max(0.0, self._until - time.monotonic())
            return {"mode": self._mode if left else "ok", "left_s": left, **self._taken}


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the functions open dozens of connections at once

    def __init__(self, address: tuple[str, int], upstream: str, hold_s: float) -> None:
        super().__init__(address, _Handler)
        self.upstream = urlsplit(upstream)
        self.hold_s = hold_s
        self.faults = Faults()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 and Lambda clients expect
    server: FaultProxy

    def _handle(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            self._answer(411, {"error": "send a Content-Length"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path == CONTROL_PATH:
            self._control(body)
            return
        mode = self.server.faults.take()
        if mode == "error":
            self.log_message("%s %s: answered 503 (injected)", self.command, self.path)
            self._answer(503, {"error": "injected fault"})
        elif mode == "timeout":
            self.log_message("%s %s: held, never answered (injected)", self.command, self.path)
            time.sleep(self.server.hold_s)
            self.close_connection = True
        else:
            self._forward(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _control(self, body: bytes) -> None:
        if self.command == "POST":
            order = json.loads(body or b"{}")
            if order.get("mode") not in MODES:
                self._answer(400, {"error": f"mode must be one of {', '.join(MODES)}"})
                return
            self.server.faults.open_window(order["mode"], float(order.get("seconds", 0)))
        self._answer(200, self.server.faults.snapshot())

    def _forward(self, body: bytes) -> None:
        upstream = self.server.upstream
        connection = http.client.HTTPConnection(
            upstream.hostname, upstream.port, timeout=UPSTREAM_TIMEOUT_S
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
        except OSError as exc:
            connection.close()
            self._answer(502, {"error": f"upstream unreachable: {exc}"})
            return
        try:
            self._relay(response)
        finally:
            connection.close()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        """The upstream's answer, streamed; re-chunked when it had no Content-Length."""
        bodiless = self.command == "HEAD" or response.status in (204, 304)
        chunked = not bodiless and response.getheader("Content-Length") is None
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while chunk := response.read1(CHUNK_BYTES):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests forwarded or answered are not logged; the faults injected are."""


def set_fault(proxy_url: str, mode: str, seconds: float = 0.0) -> None:
    """Switch the proxy at `proxy_url` to `mode` for `seconds`."""
    order = {"mode": mode, "seconds": seconds}
    requests.post(proxy_url + CONTROL_PATH, json=order, timeout=5).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port to forward to")
    parser.add_argument(
        "--hold-s", type=float, default=DEFAULT_HOLD_S, help="how long `timeout` holds a request"
    )
    args = parser.parse_args()
    FaultProxy((args.host, args.port), args.upstream, args.hold_s).serve_forever()


if __name__ == "__main__":
    main()
