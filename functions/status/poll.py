"""The front end's status poll, `GET /v1/status`: what it answers, and the fast path serving it.

Every user's browser polls this route every few seconds, so it is by far the busiest one.
Flask's request and response machinery costs about as much CPU as the poll's own work (the
token, one Redis round trip, the JSON and its ETag), so `FastPoll` answers a poll with a valid
user token straight from the WSGI environ. Everything else goes on to the Flask app (a token
of another issuer, such as an admin's bearer token, untouched), whose route
for the same path answers with the same `status_answer`; CORS headers and request metrics come
from the same objects on both paths. A poll that fails on the fast path goes on to Flask with
its error in the environ (`POLL_ERROR`), and the route answers that error as any route
answers errors, without checking the token or reading Redis a second time. The fast path's
answers carry the same security headers as Flask's (security_headers.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from werkzeug.http import HTTP_STATUS_CODES, parse_etags

from functions.common.metrics import REQUEST_STARTED, RequestMetrics
from functions.common.pipeline import PIPELINE
from functions.common.status_model import UserStatus
from functions.status.auth import TokenVerifier, Unauthorized, bearer_token
from functions.status.cors import CorsPolicy
from functions.status.security_headers import SECURITY_HEADERS
from functions.status.status_reader import StatusReader

STATUS_PATH = "/v1/status"
POLL_ERROR = "status.poll_error"

MESSAGES = PIPELINE.messages()


@dataclass(frozen=True)
class StatusAnswer:
    """A status response: 200 with the JSON body, or 304 without one."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def status_body(status: UserStatus) -> dict[str, Any]:
    run = status.run
    return {
        "user_id": status.user_id,
        "phase": status.phase,
        "message": MESSAGES[status.phase],
        "run": {
            "started_at": run.started_at,
            "expected": run.photos,
            **run.counts,
            "progress": round(run.progress, 4),
            "eta_s": run.eta_s,
        },
        "counts": status.counts,
        "timestamps": status.timestamps,
        "failures": status.failures,
    }


def status_answer(status: UserStatus, if_none_match: str | None) -> StatusAnswer:
    """The status as never-cached JSON with an ETag; 304 without a body when the request's
    If-None-Match holds that ETag."""
    data = json.dumps(status_body(status), separators=(",", ":")).encode()
    etag = hashlib.blake2b(data, digest_size=16).hexdigest()
    headers = [("ETag", f'"{etag}"'), ("Cache-Control", "no-store")]
    if parse_etags(if_none_match).contains_weak(etag):
        return StatusAnswer(304, headers, b"")
    return StatusAnswer(200, [("Content-Type", "application/json"), *headers], data)


class FastPoll:
    """WSGI middleware: answers `GET /v1/status` with a valid token without Flask.

    `fallback` (the Flask app's own WSGI callable) answers every other request.
    """

    def __init__(
        self,
        fallback: WSGIApplication,
        reader: StatusReader,
        tokens: TokenVerifier,
        cors: CorsPolicy,
        request_metrics: RequestMetrics,
    ) -> None:
        self.fallback = fallback
        self._reader = reader
        self._tokens = tokens
        self._cors = cors
        self._metrics = request_metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "GET" or environ.get("PATH_INFO") != STATUS_PATH:
            return self.fallback(environ, start_response)
        started = time.perf_counter()
        token = ""
        try:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
            principal = self._tokens.verify(token)
            answer = status_answer(
                self._reader.user_status(principal.user_id), environ.get("HTTP_IF_NONE_MATCH")
            )
        except Unauthorized as exc:
            if self._tokens.is_other_issuers(token):
                # Not a user token (an admin's bearer token): Flask's route verifies it, as
                # every route does.
                return self.fallback(environ, start_response)
            environ[POLL_ERROR] = exc
            environ[REQUEST_STARTED] = started
            return self.fallback(environ, start_response)
        except Exception as exc:  # any error: Flask answers it, as it does on every route
            environ[POLL_ERROR] = exc
            environ[REQUEST_STARTED] = started
            return self.fallback(environ, start_response)
        headers = [
            *answer.headers,
            *self._cors.headers(environ.get("HTTP_ORIGIN"), STATUS_PATH, "GET"),
            *SECURITY_HEADERS,
        ]
        if answer.body:  # a 304 has neither body nor length
            headers.append(("Content-Length", str(len(answer.body))))
        start_response(f"{answer.status} {HTTP_STATUS_CODES[answer.status].upper()}", headers)
        self._metrics.observe("GET", STATUS_PATH, answer.status, time.perf_counter() - started)
        return [answer.body]
