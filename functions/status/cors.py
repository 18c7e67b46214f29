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


class CorsPolicy:
    """Which origins may call the user API, and the headers that tell a browser so."""

    def __init__(self, origins: Iterable[str]) -> None:
        self._allowed = frozenset(origins)

    def headers(self, origin: str | None, path: str, method: str) -> list[tuple[str, str]]:
        """The CORS headers the response to this request carries (none for most requests)."""
        if origin is None or not path.startswith("/v1/") or path.startswith(_EXCLUDED_PREFIXES):
            return []
        headers = [("Vary", "Origin")]
        if origin in self._allowed:
            headers += [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Expose-Headers", "ETag"),
            ]
            if method == "OPTIONS":
                headers += [
                    ("Access-Control-Allow-Methods", "GET, POST"),
                    ("Access-Control-Allow-Headers", _ALLOWED_HEADERS),
                    ("Access-Control-Max-Age", _PREFLIGHT_MAX_AGE_S),
                ]
        return headers


def add_cors(app: Flask, policy: CorsPolicy) -> None:
    @app.after_request
    def cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        response.headers.extend(policy.headers(origin, request.path, request.method))
        return response
