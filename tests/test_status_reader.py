"""The status reader gives the front end each user's run and its ETA, and the admin the
stage backlogs, the latency windows and the active users, from what the photo store wrote;
the admin's thresholds persist as set."""

# The fixtures imported from tests.test_photo_store are parameters of the tests below.
# ruff: noqa: F811

import pytest
import redis

from functions.common.errors import TransientError
from functions.common.pipeline import PhotoState
from functions.status.admin_store import ThresholdStore
from functions.status.status_reader import StatusReader
from tests.test_photo_store import (  # noqa: F401 - fixtures
    T0,
    client,
    process,
    store,
)


def test_an_unreachable_redis_is_a_transient_error():
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2)
    with pytest.raises(TransientError):
        StatusReader(unreachable).user_status("ann")


# ETA


def test_eta_is_unknown_until_something_completes(store, reader):
    store.declare_upload("ann", 2, at=T0)
    assert reader.user_status("ann", now=T0 + 10).run.eta_s is None


def test_eta_follows_the_rate_since_the_run_started(store, reader):
    for photo in ("a", "b", "c"):
        store.record("ann", photo, PhotoState.UPLOADED, at=T0)
    store.record("ann", "a", PhotoState.THUMBNAIL, at=T0 + 5)
    store.record("ann", "b", PhotoState.THUMBNAIL, at=T0 + 10)
    # 2 completions in 10 s; 4 of 6 stage completions left: 20 s.
    assert reader.user_status("ann", now=T0 + 10).run.eta_s == pytest.approx(20.0)


def test_eta_uses_only_the_most_recent_completions(store, reader):
    for index in range(6):
        store.record("ann", f"p{index}", PhotoState.UPLOADED, at=T0)
    # Slow at first (one per 100 s), then fast (one per second).
    store.record("ann", "p0", PhotoState.THUMBNAIL, at=T0 + 100)
    store.record("ann", "p1", PhotoState.THUMBNAIL, at=T0 + 200)
    for index, offset in zip(range(2, 6), (201, 202, 203, 204), strict=True):
        store.record("ann", f"p{index}", PhotoState.THUMBNAIL, at=T0 + offset)
    # The 4 newest completions took 4 s (since the 5th newest, at T0 + 200): 6 embeddings left.
    assert reader.user_status("ann", now=T0 + 204).run.eta_s == pytest.approx(6.0)


def test_eta_stays_put_between_completions_so_polls_can_be_answered_304(store, reader):
    store.record("ann", "a", PhotoState.UPLOADED, at=T0)
    store.record("ann", "a", PhotoState.THUMBNAIL, at=T0 + 1)
    assert reader.user_status("ann", now=T0 + 1).run.eta_s == 1.0
    assert reader.user_status("ann", now=T0 + 60).run.eta_s == 1.0


# Backlog, samples and thresholds for the admin


def test_the_backlog_counts_waiting_photos_and_the_oldest_wait_per_stage(store, reader):
    store.record("ann", "a", PhotoState.UPLOADED, at=T0)
    store.record("bob", "b", PhotoState.UPLOADED, at=T0 + 10)
    store.record("bob", "c", PhotoState.UPLOADED, at=T0 + 20)
    store.record("bob", "c", PhotoState.THUMBNAIL, at=T0 + 30)
    backlog = reader.snapshot(idle_retention_s=3600, now=T0 + 40).backlog
    assert (backlog["thumbnail"].pending, backlog["thumbnail"].oldest_since) == (2, T0)
    assert (backlog["embed"].pending, backlog["embed"].oldest_since) == (1, T0 + 30)


def test_a_photo_leaves_the_backlog_when_it_ends(store, reader):
    process(store, "ann", "a", T0)
    store.record("ann", "b", PhotoState.UPLOADED, at=T0)
    store.record("ann", "b", PhotoState.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 1)
    backlog = reader.snapshot(idle_retention_s=3600, now=T0 + 5).backlog
    assert (backlog["thumbnail"].pending, backlog["embed"].pending) == (0, 0)
    assert backlog["thumbnail"].oldest_since is None


def test_samples_older_than_the_window_are_not_read(store, reader):
    store.record("ann", "a", PhotoState.THUMBNAIL, at=T0, duration_ms=100)
    store.record("ann", "b", PhotoState.THUMBNAIL, at=T0 + 200, duration_ms=200)
    samples = reader.snapshot(idle_retention_s=3600, now=T0 + 400).samples["thumbnail"]
    assert [s.duration_ms for s in samples] == [200.0]


def test_thresholds_persist_as_set(client):
    thresholds = ThresholdStore(client)
    thresholds.set_thresholds({"thumbnail": {"p95_ms": 250.0}, "embed": {"backlog_age_s": 30.0}})
    thresholds.set_thresholds({"thumbnail": {"backlog_age_s": 45.0}})
    assert ThresholdStore(client).thresholds() == {
        "thumbnail": {"p95_ms": 250.0, "backlog_age_s": 45.0},
        "embed": {"backlog_age_s": 30.0},
    }


def test_the_snapshot_lists_active_users_newest_first(store, reader):
    store.record("ann", "a", PhotoState.UPLOADED, at=T0)
    store.record("bob", "b", PhotoState.UPLOADED, at=T0 + 5)
    users = reader.snapshot(idle_retention_s=3600, now=T0 + 10).users
    assert [(status.user_id, last) for status, last in users] == [("bob", T0 + 5), ("ann", T0)]


def test_idle_users_leave_the_active_index_after_the_retention(store, reader):
    process(store, "ann", "a", T0)
    store.record("bob", "b", PhotoState.UPLOADED, at=T0)
    reader.snapshot(idle_retention_s=60, now=T0 + 100)
    # ann is idle and old; bob still waits for a thumbnail, however old.
    listed = reader.snapshot(idle_retention_s=3600, now=T0 + 101).users
    assert [status.user_id for status, _ in listed] == ["bob"]
