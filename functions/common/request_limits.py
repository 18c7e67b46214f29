"""Bounded request bodies for every Flask app: a body over its endpoint's limit is answered
413 before it is read (a Content-Length over it) or as soon as reading passes the limit (a
chunked body)."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge


def limit_request_bodies(
    app: Flask, default_bytes: int, per_endpoint: Mapping[str, int] | None = None
) -> None:
    """Refuse bodies over `default_bytes`, or over `per_endpoint[endpoint]` for those named.
    Call it after `metrics.instrument`, whose timer must start before a request is refused."""
    app.config["MAX_CONTENT_LENGTH"] = default_bytes
    limits = dict(per_endpoint or {})

    @app.before_request
    def refuse_oversized_body() -> None:
        limit = limits.get(request.endpoint or "", default_bytes)
        request.max_content_length = limit
        if request.content_length is None:
            _read_unsized_body(limit)
        elif request.content_length > limit:
            raise RequestEntityTooLarge(f"the request body is over {limit} bytes")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> tuple[Response, int]:
        return jsonify(error=exc.description), 413


def _read_unsized_body(limit: int) -> None:
    """Read (and cache for the view) a body sent without Content-Length, chunked, up to one
    byte past `limit`: werkzeug's limited stream ends a body at the limit without a word, so
    an oversized one would reach the view cut short rather than be refused."""
    request.max_content_length = limit + 1
    if len(request.get_data()) > limit:
        raise RequestEntityTooLarge(f"the request body is over {limit} bytes")
