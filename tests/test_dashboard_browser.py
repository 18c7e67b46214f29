"""The admin dashboard, in a real headless Chromium (Debian's), against a live local stack.

One photo goes through the whole pipeline first, so both stages have samples and its user has
a row. Screenshots land in var/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from devstack.sample_photos import sample_photo
from devstack.stack import ROOT, LocalStack
from functions.common.pipeline import PIPELINE
from tests.stack_fixtures import deliver, upload, wait_until_idle

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "screenshots"
USER_ID = "dashboard-user"
# Two polls and a little: long enough for any change to reach the page.
UPDATE_TIMEOUT_MS = 6000
GENEROUS_P95_MS = "60000"
TINY_P95_MS = "0.01"
# A stage the pipeline table does not have (yet): the dashboard must draw it all the same.
EXTRA_STAGE = {"name": "caption", "label": "Caption", "counted_as": "captions"}
EXTRA_STAGE_DONE = 7


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/install-system-deps.sh --chromium "
            "(make test does it)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def processed_photo(stack: LocalStack) -> str:
    """One photo with a face, thumbnailed and embedded; returns its user's id."""
    event = upload(stack, f"{USER_ID}/photos/portrait.jpg", sample_photo(seed=11, faces=1))
    assert deliver(stack, [event]).status_code == 200
    wait_until_idle(stack, USER_ID, photos=1)
    return USER_ID


@pytest.fixture
def page(browser: Browser, stack: LocalStack) -> Iterator[Page]:
    """A fresh browser context on the status function; any script error fails the test."""
    context = browser.new_context(
        base_url=stack.urls["status"], viewport={"width": 1400, "height": 1000}
    )
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert script_errors == []


def sign_in(page: Page, stack: LocalStack) -> None:
    """Sign in on the dashboard and wait for the first overview to be drawn."""
    page.goto("/admin")
    page.get_by_label("Admin password").fill(stack.config.admin_password)
    # Enter, not a click: the pointer stays off the map, so no tooltip shows until a test hovers.
    page.get_by_label("Admin password").press("Enter")
    expect(page.get_by_test_id("star-thumbnail")).to_have_attribute(
        "data-health", re.compile("^(ok|breach)$")
    )


@pytest.fixture
def dashboard(page: Page, stack: LocalStack, processed_photo: str) -> Page:
    """The page signed in, with the first overview drawn."""
    sign_in(page, stack)
    return page


@pytest.fixture
def admin_api(stack: LocalStack) -> Iterator[requests.Session]:
    """An admin session for the API; the thresholds are put back as they were afterwards."""
    session = requests.Session()
    login = session.post(
        f"{stack.urls['status']}/v1/admin/login",
        json={"password": stack.config.admin_password},
        timeout=5,
    )
    login.raise_for_status()
    thresholds_url = f"{stack.urls['status']}/v1/admin/thresholds"
    before = session.get(thresholds_url, timeout=5).json()
    yield session
    session.put(thresholds_url, json=before, timeout=5).raise_for_status()


def save_thumbnail_p95(page: Page, value: str) -> None:
    page.get_by_test_id("threshold-thumbnail-p95_ms").fill(value)
    page.get_by_role("button", name="Save thresholds").click()


def save_thumbnail_p95_and_wait(page: Page, value: str) -> None:
    save_thumbnail_p95(page, value)
    expect(page.get_by_test_id("thresholds-status")).to_contain_text("Saved")


def with_an_extra_stage(route: Route) -> None:
    """The stack's real overview, with EXTRA_STAGE after its last stage: in the pipeline, with
    the last stage's health, its own limits and a count in each user row."""
    response = route.fetch()
    if not response.ok:  # not signed in yet: the page shows the sign-in form
        route.fulfill(response=response)
        return
    body = response.json()
    last = body["pipeline"][-1]["name"]
    body["pipeline"].append(EXTRA_STAGE)
    body["stages"][EXTRA_STAGE["name"]] = body["stages"][last]
    body["thresholds"][EXTRA_STAGE["name"]] = {"p95_ms": 700.0, "backlog_age_s": 180.0}
    for user in body["users"]:
        user[f"{EXTRA_STAGE['counted_as']}_done"] = EXTRA_STAGE_DONE
    route.fulfill(response=response, json=body)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / name, full_page=True)


def test_a_wrong_password_is_refused_and_the_dashboard_stays_hidden(page: Page) -> None:
    page.goto("/admin")
    page.get_by_label("Admin password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_test_id("login-error")).to_contain_text("wrong password")
    expect(page.get_by_test_id("galaxy")).to_be_hidden()


def test_the_galaxy_map_shows_both_stages_and_the_users_progress(dashboard: Page) -> None:
    for stage in ("thumbnail", "embed"):
        star = dashboard.get_by_test_id(f"star-{stage}")
        expect(star).to_be_visible()
        expect(star).to_have_attribute("data-health", re.compile("^(ok|breach)$"))
        expect(star).to_contain_text("/min")
    row = dashboard.locator(f'[data-testid="user-row"][data-user-id="{USER_ID}"]')
    expect(row).to_contain_text("100 %")
    screenshot(dashboard, "dashboard.png")


def test_hovering_a_star_shows_its_throughput_latency_and_backlog(dashboard: Page) -> None:
    tooltip = dashboard.get_by_test_id("star-tooltip")
    expect(tooltip).to_be_hidden()

    dashboard.get_by_test_id("star-thumbnail").hover()

    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text("Thumbnail stage")
    expect(tooltip).to_contain_text(re.compile(r"Throughput\s*\d+(\.\d)?/min"))
    expect(tooltip).to_contain_text(re.compile(r"p95 latency\s*[\d.]+ m?s \(limit [\d.]+ m?s\)"))
    expect(tooltip).to_contain_text(re.compile(r"Backlog\s*\d+ pending, oldest"))


def test_clicking_a_star_zooms_into_its_live_charts_and_back(dashboard: Page) -> None:
    galaxy = dashboard.locator("#galaxy-map")
    full_view = galaxy.get_attribute("viewBox")
    detail = dashboard.get_by_test_id("stage-detail")

    dashboard.get_by_test_id("star-embed").click()

    expect(detail).to_be_visible()
    expect(dashboard.get_by_test_id("stage-detail-title")).to_have_text("Embed stage")
    for series in ("p50", "p95", "p99"):
        line = dashboard.get_by_test_id("latency-chart").locator(f"path.series-{series}")
        expect(line).to_have_attribute("d", re.compile(r"^M[\d.]+ [\d.]+"))
    throughput = dashboard.get_by_test_id("throughput-chart").locator("path.series-throughput")
    expect(throughput).to_have_attribute("d", re.compile(r"^M[\d.]+ [\d.]+"))
    # A later poll extends the lines: the charts are live.
    expect(throughput).to_have_attribute("d", re.compile(r"^M\S+ \S+ L"), timeout=UPDATE_TIMEOUT_MS)
    expect(galaxy).not_to_have_attribute("viewBox", full_view)
    screenshot(dashboard, "dashboard-embed.png")

    dashboard.get_by_role("button", name="Back to galaxy").click()

    expect(detail).to_be_hidden()
    expect(galaxy).to_have_attribute("viewBox", full_view)


def test_an_invalid_threshold_shows_the_servers_error_and_changes_nothing(
    dashboard: Page, admin_api: requests.Session, stack: LocalStack
) -> None:
    thresholds_url = f"{stack.urls['status']}/v1/admin/thresholds"
    before = admin_api.get(thresholds_url, timeout=5).json()

    save_thumbnail_p95(dashboard, "-5")

    expect(dashboard.get_by_test_id("thresholds-error")).to_contain_text(
        "thumbnail.p95_ms must be greater than 0"
    )
    assert admin_api.get(thresholds_url, timeout=5).json() == before


@pytest.mark.usefixtures("admin_api")
def test_a_tiny_thumbnail_p95_limit_turns_its_star_to_breach_and_back(dashboard: Page) -> None:
    star = dashboard.get_by_test_id("star-thumbnail")
    save_thumbnail_p95_and_wait(dashboard, GENEROUS_P95_MS)
    expect(star).to_have_attribute("data-health", "ok", timeout=UPDATE_TIMEOUT_MS)

    save_thumbnail_p95_and_wait(dashboard, TINY_P95_MS)

    expect(star).to_have_attribute("data-health", "breach", timeout=UPDATE_TIMEOUT_MS)
    expect(star).to_contain_text("Breach")
    screenshot(dashboard, "dashboard-breach.png")

    save_thumbnail_p95_and_wait(dashboard, GENEROUS_P95_MS)

    expect(star).to_have_attribute("data-health", "ok", timeout=UPDATE_TIMEOUT_MS)
    expect(star).to_contain_text("OK")


@pytest.mark.usefixtures("processed_photo")
def test_a_third_stage_in_the_overview_gets_a_star_a_users_column_and_threshold_inputs(
    page: Page, stack: LocalStack
) -> None:
    # The stack's status function runs under gunicorn in its own process, where monkeypatching
    # PIPELINE from here cannot reach: the browser's overview answer gets the third stage.
    page.route("**/v1/admin/overview", with_an_extra_stage)
    sign_in(page, stack)
    name, label = EXTRA_STAGE["name"], EXTRA_STAGE["label"]

    expect(page.locator("#galaxy-map .star")).to_have_count(len(PIPELINE) + 1)
    star = page.get_by_test_id(f"star-{name}")
    expect(star).to_have_attribute("data-health", re.compile("^(ok|breach)$"))
    expect(star).to_contain_text(label)
    stage_labels = [*(stage.label for stage in PIPELINE), label]
    headings = ["User", "Phase", "Progress", "Uploaded", *stage_labels, "Failed", "ETA"]
    expect(page.get_by_test_id("users-table").locator("thead th")).to_have_text(headings)
    row = page.locator(f'[data-testid="user-row"][data-user-id="{USER_ID}"]')
    expect(row.locator(f'td[data-stage="{name}"]')).to_have_text(str(EXTRA_STAGE_DONE))
    form = page.get_by_test_id("thresholds-form")
    expect(form.locator("legend")).to_have_text(stage_labels)
    expect(form.get_by_test_id(f"threshold-{name}-p95_ms")).to_be_visible()
    expect(form.get_by_label("p95 latency (ms)")).to_have_count(len(PIPELINE) + 1)
    # The limits in force still fill the table's stages' inputs.
    for stage in PIPELINE:
        expect(form.get_by_test_id(f"threshold-{stage.name}-p95_ms")).to_have_value(
            re.compile(r"^\d")
        )
    screenshot(page, "dashboard-three-stages.png")
