"""The admin API: thresholds (validated, persisted) and the overview of both stages against
them: throughput, latency percentiles, backlog, errors, breaches and active users."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

import time

import pytest

from functions.common.pipeline import PhotoState
from functions.status.app import create_app
from functions.status.overview import percentile
from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    app,
    as_admin,
    auth_settings,
    client,
    store,
)

DEFAULTS = {
    "thumbnail": {"p95_ms": 300.0, "backlog_age_s": 60.0},
    "embed": {"p95_ms": 500.0, "backlog_age_s": 120.0},
}


def put_thresholds(client, body):
    return client.put("/v1/admin/thresholds", json=body, headers=as_admin())


def overview(client):
    return client.get("/v1/admin/overview", headers=as_admin()).get_json()


def thumbnails_taking(store, durations_ms, user="ann", reason=None):
    stage = PhotoState.THUMBNAIL_FAILED if reason else PhotoState.THUMBNAIL
    for index, duration in enumerate(durations_ms):
        photo = f"{user}-{reason}-{index}-{duration}"
        store.record(user, photo, PhotoState.UPLOADED)
        store.record(user, photo, stage, duration_ms=duration, reason=reason)


# Thresholds


def test_thresholds_default_to_the_missions_acceptable_delays(client):
    assert client.get("/v1/admin/thresholds", headers=as_admin()).get_json() == DEFAULTS


def test_a_partial_change_returns_every_threshold_in_force(client):
    response = put_thresholds(client, {"thumbnail": {"p95_ms": 250}})
    assert response.status_code == 200
    assert response.get_json() == {
        **DEFAULTS,
        "thumbnail": {"p95_ms": 250.0, "backlog_age_s": 60.0},
    }


def test_thresholds_persist_in_redis_across_instances(client, store, auth_settings, admin_settings):
    put_thresholds(client, {"embed": {"backlog_age_s": 30.5}})
    other = create_app(store, auth_settings, admin_settings).test_client()
    body = other.get("/v1/admin/thresholds", headers=as_admin()).get_json()
    assert body["embed"]["backlog_age_s"] == 30.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"resize": {"p95_ms": 100}}, "unknown stage 'resize'"),
        ({"thumbnail": {"p99_ms": 100}}, "unknown threshold 'p99_ms'"),
        ({"thumbnail": {"p95_ms": 0}}, "greater than 0"),
        ({"thumbnail": {"p95_ms": -5}}, "greater than 0"),
        ({"thumbnail": {"p95_ms": "300"}}, "must be a number"),
        ({"thumbnail": {"p95_ms": True}}, "must be a number"),
        ({"thumbnail": {"p95_ms": 1e12}}, "at most"),
        ({"thumbnail": 300}, "must be an object"),
        ([1, 2], "JSON object"),
    ],
)
def test_an_invalid_change_is_refused_with_a_clear_error_and_changes_nothing(client, body, message):
    response = put_thresholds(client, body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert client.get("/v1/admin/thresholds", headers=as_admin()).get_json() == DEFAULTS


def test_a_body_that_is_not_json_is_refused(client):
    response = client.put(
        "/v1/admin/thresholds", data="p95=1", headers={**as_admin(), "Content-Type": "text/plain"}
    )
    assert response.status_code == 400


# Overview


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (
        50.0,
        95.0,
        99.0,
    )
    assert percentile([], 95) is None


def test_the_overview_reports_latency_percentiles_and_throughput_per_stage(client, store):
    thumbnails_taking(store, range(10, 210, 10))
    stage = overview(client)["stages"]["thumbnail"]
    assert stage["latency_ms"] == {"p50": 100.0, "p95": 190.0, "p99": 200.0}
    assert stage["throughput_per_min"] == 20
    assert (stage["health"], stage["breaches"]) == ("ok", [])


def test_a_p95_above_its_threshold_is_a_breach(client, store):
    thumbnails_taking(store, [100] * 18 + [400, 450])
    stage = overview(client)["stages"]["thumbnail"]
    assert stage["health"] == "breach"
    assert stage["breaches"] == ["p95 latency 400 ms > 300 ms"]


def test_raising_the_threshold_clears_the_breach(client, store):
    thumbnails_taking(store, [100] * 18 + [400, 450])
    put_thresholds(client, {"thumbnail": {"p95_ms": 500}})
    assert overview(client)["stages"]["thumbnail"]["health"] == "ok"


def test_a_photo_waiting_longer_than_the_backlog_threshold_is_a_breach(client, store):
    store.record("ann", "old.jpg", PhotoState.UPLOADED, at=time.time() - 90)
    store.record("ann", "new.jpg", PhotoState.UPLOADED)
    thumbnail = overview(client)["stages"]["thumbnail"]
    assert thumbnail["backlog"]["pending"] == 2
    assert thumbnail["backlog"]["oldest_age_s"] == pytest.approx(90, abs=2)
    assert thumbnail["breaches"][0].startswith("oldest pending photo waiting 9")


def test_errors_are_counted_by_reason_with_the_error_rate(client, store):
    thumbnails_taking(store, [50] * 6)
    thumbnails_taking(store, [5, 5, 5], reason="corrupt")
    thumbnails_taking(store, [5], reason="unsupported")
    stage = overview(client)["stages"]["thumbnail"]
    assert stage["errors_by_reason"] == {"corrupt": 3, "unsupported": 1}
    assert stage["error_rate"] == 0.4


def test_the_overview_lists_users_still_working_first(client, store):
    store.record("ann", "a", PhotoState.UPLOADED)
    store.record("ann", "a", PhotoState.EMBEDDING)
    store.record("bob", "b", PhotoState.UPLOADED)
    store.record("bob", "b", PhotoState.THUMBNAIL)
    users = overview(client)["users"]
    assert [u["user_id"] for u in users] == ["bob", "ann"]
    assert users[0] == {
        "user_id": "bob",
        "phase": "indexing",
        "progress": 0.5,
        "uploaded": 1,
        "thumbnails_done": 1,
        "embeddings_done": 0,
        "failed": 0,
        "eta_s": users[0]["eta_s"],
    }


def test_the_overview_includes_the_thresholds_in_force(client):
    put_thresholds(client, {"embed": {"p95_ms": 800}})
    assert overview(client)["thresholds"]["embed"]["p95_ms"] == 800.0


def test_breaches_are_exported_as_prometheus_gauges(client, store):
    thumbnails_taking(store, [400] * 5)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'photo_stage_threshold_breach{stage="thumbnail",threshold="p95_ms"} 1.0' in metrics
    assert 'photo_stage_threshold_breach{stage="embed",threshold="p95_ms"} 0.0' in metrics
