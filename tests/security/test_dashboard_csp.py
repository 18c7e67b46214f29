"""The dashboard works under its Content-Security-Policy in a real Chromium: its scripts run
(they show the sign-in form) and the browser reports no violation."""

# The fixtures imported below are parameters of the tests.
# ruff: noqa: F811

from __future__ import annotations

from playwright.sync_api import expect, sync_playwright

from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    app,
    auth_settings,
    store,
)
from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS


def test_the_dashboard_runs_under_its_csp_without_a_violation(serve, app):
    url = serve(app)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        console = []
        page.on("console", lambda message: console.append(message.text))
        response = page.goto(url + "/admin")
        expect(page.get_by_test_id("login-form")).to_be_visible()
        browser.close()
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert [text for text in console if "Content Security Policy" in text] == []
