"""The dashboard and the API answer with a Content-Security-Policy and the usual security
headers, on Flask's routes and on the poll's fast path alike."""

# The fixtures imported below are parameters of the tests.
# ruff: noqa: F811

from __future__ import annotations

import pytest
import requests

from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    app,
    as_user,
    auth_settings,
    store,
)

EXPECTED = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@pytest.mark.parametrize(
    "path",
    ["/admin", "/admin/static/dashboard.js", "/openapi.json", "/v1/status", "/v1/nowhere"],
    ids=["dashboard", "script", "openapi", "status-fast-path", "404"],
)
def test_every_answer_of_the_status_function_carries_the_security_headers(serve, app, path):
    response = requests.get(serve(app) + path, headers=as_user(), timeout=5)
    assert {name: response.headers.get(name) for name in EXPECTED} == EXPECTED


def test_the_dashboard_may_not_be_framed(serve, app):
    assert requests.get(serve(app) + "/admin", timeout=5).headers["X-Frame-Options"] == "DENY"
