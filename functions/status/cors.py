"""CORS for the user API, so the configured front-end origins can poll it from the browser.

Only `/v1/` user endpoints: the admin API is same-origin (the dashboard is served here) and
the dead-letter sink is called by the broker, never by a browser.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

_EXCLUDED_PREFIXES = ("/v1/admin/", "/v1/dead-letter")
_ALLOWED_HEADERS = "Authorization, Content-Type, If-None-Match"
_PREFLIGHT_MAX_AGE_S = "600"


def add_cors(app: Flask, origins: Iterable[str]) -> None:
    allowed = frozenset(origins)

    @app.after_request
    def cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if (
            origin is None
            or not request.path.startswith("/v1/")
            or request.path.startswith(_EXCLUDED_PREFIXES)
        ):
            return response
        response.headers.add("Vary", "Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "ETag"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST"
                response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE_S
        return response
