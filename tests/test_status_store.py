"""The status store counts each photo once per stage, whatever the delivery order or repeats,
and keeps each user's current run, its ETA, the stage backlogs and latency windows."""

import pytest
import redis

from functions.common.config import StatusSettings
from functions.common.errors import TransientError
from functions.common.status_store import Stage, StatusStore

T0 = 1_000_000.0


@pytest.fixture
def client(redis_client):
    return redis_client


@pytest.fixture
def store(client):
    return StatusStore(
        client,
        StatusSettings(
            failures_kept=3,
            upload_declaration_ttl_s=60,
            eta_completions=4,
            latency_window_s=300,
            samples_kept=5,
        ),
    )


def process(store, user, photo, at, stages=(Stage.UPLOADED, Stage.THUMBNAIL, Stage.EMBEDDING)):
    for offset, stage in enumerate(stages):
        store.record(user, photo, stage, at=at + offset)


# Counting, once per photo and stage


def test_a_duplicate_upload_counts_once(store):
    assert store.record("ann", "a.jpg", Stage.UPLOADED)
    assert not store.record("ann", "a.jpg", Stage.UPLOADED)
    assert store.user_status("ann").uploaded == 1


def test_phase_is_processing_while_thumbnails_are_pending(store):
    store.record("ann", "a.jpg", Stage.UPLOADED)
    store.record("ann", "b.jpg", Stage.UPLOADED)
    store.record("ann", "a.jpg", Stage.THUMBNAIL)
    assert store.user_status("ann").phase == "processing"


def test_phase_is_indexing_once_thumbnails_are_done_and_embeddings_pending(store):
    store.record("ann", "a.jpg", Stage.UPLOADED)
    store.record("ann", "a.jpg", Stage.THUMBNAIL)
    status = store.user_status("ann")
    assert (status.phase, status.embeddings_pending) == ("indexing", 1)


def test_phase_is_idle_when_every_photo_is_embedded(store):
    process(store, "ann", "a.jpg", T0)
    store.record("ann", "b.jpg", Stage.UPLOADED)
    store.record("ann", "b.jpg", Stage.THUMBNAIL)
    store.record("ann", "b.jpg", Stage.EMBEDDING, faces=2)
    status = store.user_status("ann")
    assert (status.phase, status.embeddings_done, status.faces) == ("idle", 2, 2)


def test_a_failed_thumbnail_ends_the_photo_so_the_user_reaches_idle(store):
    store.record("ann", "bad.jpg", Stage.UPLOADED)
    store.record("ann", "bad.jpg", Stage.THUMBNAIL_FAILED, reason="corrupt", detail="truncated")
    status = store.user_status("ann")
    assert status.phase == "idle"
    assert status.thumbnails_failed == 1
    assert status.failures[0]["reason"] == "corrupt"


def test_a_repeated_embedding_does_not_count_its_faces_twice(store):
    store.record("ann", "a.jpg", Stage.UPLOADED)
    store.record("ann", "a.jpg", Stage.THUMBNAIL)
    store.record("ann", "a.jpg", Stage.EMBEDDING, faces=3)
    assert not store.record("ann", "a.jpg", Stage.EMBEDDING, faces=3)
    assert store.user_status("ann").faces == 3


def test_a_late_thumbnail_after_its_embedding_changes_nothing(store):
    process(store, "ann", "a.jpg", T0)
    assert not store.record("ann", "a.jpg", Stage.THUMBNAIL)
    assert store.user_status("ann").thumbnails_done == 1


def test_a_photo_first_seen_at_embedding_still_counts_as_uploaded_and_thumbnailed(store):
    store.record("ann", "a.jpg", Stage.EMBEDDING)
    status = store.user_status("ann")
    assert (status.uploaded, status.thumbnails_done, status.embeddings_done) == (1, 1, 1)
    assert status.phase == "idle"


def test_an_upload_recorded_after_its_thumbnail_counts_once_and_waits_for_nothing(store):
    store.record("ann", "a.jpg", Stage.THUMBNAIL, at=T0 + 2)
    assert not store.record("ann", "a.jpg", Stage.UPLOADED, at=T0)
    status = store.user_status("ann", now=T0 + 3)
    assert (status.uploaded, status.thumbnails_done, status.run.uploaded) == (1, 1, 1)
    assert store.snapshot(idle_retention_s=3600, now=T0 + 3).backlog["thumbnail"].pending == 0


def test_users_are_counted_separately(store):
    store.record("ann", "a.jpg", Stage.UPLOADED)
    store.record("bob", "a.jpg", Stage.UPLOADED)
    store.record("bob", "b.jpg", Stage.UPLOADED)
    assert (store.user_status("ann").uploaded, store.user_status("bob").uploaded) == (1, 2)
    listed = store.snapshot(idle_retention_s=3600).users
    assert sorted(status.user_id for status, _ in listed) == ["ann", "bob"]


def test_only_the_newest_failures_are_kept_newest_first(store):
    for index in range(5):
        store.record("ann", f"{index}.jpg", Stage.THUMBNAIL_FAILED, reason="corrupt")
    failures = store.user_status("ann").failures
    assert [f["photo_id"] for f in failures] == ["4.jpg", "3.jpg", "2.jpg"]


def test_timestamps_record_the_last_upload_and_the_last_thumbnail(store):
    store.record("ann", "a.jpg", Stage.UPLOADED, at=100.0)
    store.record("ann", "a.jpg", Stage.THUMBNAIL, at=101.5)
    stamps = store.user_status("ann").timestamps
    assert stamps["first_upload_at"] == 100.0
    assert stamps["last_upload_at"] == 100.0
    assert stamps["last_thumbnail_at"] == 101.5


def test_an_unreachable_redis_is_a_transient_error():
    client = redis.Redis(port=1, socket_connect_timeout=0.2)
    with pytest.raises(TransientError):
        StatusStore(client).record("ann", "a.jpg", Stage.UPLOADED)


# Runs


def test_a_run_counts_each_photo_once_despite_duplicates_and_failures(store):
    for photo in ("a", "b", "c", "d"):
        store.record("ann", photo, Stage.UPLOADED, at=T0)
        store.record("ann", photo, Stage.UPLOADED, at=T0)
    store.record("ann", "a", Stage.THUMBNAIL, at=T0 + 1)
    store.record("ann", "a", Stage.THUMBNAIL, at=T0 + 1)
    store.record("ann", "b", Stage.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 1)
    store.record("ann", "b", Stage.THUMBNAIL, at=T0 + 2)
    store.record("ann", "c", Stage.THUMBNAIL, at=T0 + 1)
    store.record("ann", "c", Stage.EMBEDDING_FAILED, reason="too_large", at=T0 + 2)
    store.record("ann", "a", Stage.EMBEDDING, faces=2, at=T0 + 2)
    store.record("ann", "a", Stage.EMBEDDING, faces=2, at=T0 + 3)
    run = store.user_status("ann", now=T0 + 3).run
    assert (run.uploaded, run.thumbnails_done, run.thumbnails_failed) == (4, 2, 1)
    assert (run.embeddings_done, run.embeddings_failed, run.faces) == (1, 1, 2)
    assert (run.thumbnails_pending, run.embeddings_pending) == (1, 0)


def test_a_photo_arriving_after_the_run_finished_starts_a_new_run(store):
    process(store, "ann", "a", T0)
    process(store, "ann", "b", T0)
    store.record("ann", "c", Stage.UPLOADED, at=T0 + 100)
    status = store.user_status("ann", now=T0 + 100)
    assert (status.run.started_at, status.run.uploaded, status.run.photos) == (T0 + 100, 1, 1)
    assert status.uploaded == 3


def test_a_photo_arriving_while_the_run_is_busy_joins_it(store):
    store.record("ann", "a", Stage.UPLOADED, at=T0)
    store.record("ann", "b", Stage.UPLOADED, at=T0 + 5)
    run = store.user_status("ann", now=T0 + 5).run
    assert (run.started_at, run.uploaded) == (T0, 2)


def test_a_finished_run_keeps_its_counts_until_the_next_one_starts(store):
    process(store, "ann", "a", T0)
    run = store.user_status("ann", now=T0 + 1000).run
    assert run.finished
    assert (run.uploaded, run.embeddings_done, run.progress, run.eta_s) == (1, 1, 1.0, 0.0)


def test_progress_counts_a_failed_thumbnail_as_the_end_of_its_photo(store):
    store.record("ann", "a", Stage.UPLOADED, at=T0)
    store.record("ann", "b", Stage.UPLOADED, at=T0)
    store.record("ann", "a", Stage.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 1)
    store.record("ann", "b", Stage.THUMBNAIL, at=T0 + 1)
    # Work: b's thumbnail and embedding, a's thumbnail; two of three done.
    assert store.user_status("ann", now=T0 + 2).run.progress == pytest.approx(2 / 3)


# Declared uploads (the expected count)


def test_a_declared_upload_is_processing_before_any_photo_arrives(store):
    store.declare_upload("ann", 3, at=T0)
    status = store.user_status("ann", now=T0 + 1)
    assert status.phase == "processing"
    assert (status.run.photos, status.run.uploaded, status.run.thumbnails_pending) == (3, 0, 3)


def test_a_declared_run_is_not_finished_while_declared_photos_are_still_in_flight(store):
    store.declare_upload("ann", 3, at=T0)
    process(store, "ann", "a", T0 + 1)
    process(store, "ann", "b", T0 + 1)
    status = store.user_status("ann", now=T0 + 5)
    assert status.phase == "processing"
    assert (status.run.embeddings_done, status.run.thumbnails_pending) == (2, 1)
    process(store, "ann", "c", T0 + 6)
    assert store.user_status("ann", now=T0 + 10).phase == "idle"


def test_photos_of_a_declared_upload_join_its_run(store):
    store.declare_upload("ann", 2, at=T0)
    store.record("ann", "a", Stage.UPLOADED, at=T0 + 1)
    run = store.user_status("ann", now=T0 + 1).run
    assert (run.started_at, run.uploaded, run.photos) == (T0, 1, 2)


def test_a_declaration_during_a_busy_run_adds_to_its_photos(store):
    store.record("ann", "a", Stage.UPLOADED, at=T0)
    store.record("ann", "b", Stage.UPLOADED, at=T0)
    store.declare_upload("ann", 5, at=T0 + 1)
    assert store.user_status("ann", now=T0 + 1).run.photos == 7


def test_a_declaration_whose_photos_never_arrive_expires(store):
    store.declare_upload("ann", 3, at=T0)
    process(store, "ann", "a", T0 + 1)
    assert store.user_status("ann", now=T0 + 30).phase == "processing"
    status = store.user_status("ann", now=T0 + 1 + 61)
    assert (status.phase, status.run.photos) == ("idle", 1)


def test_each_arriving_photo_extends_the_declaration(store):
    store.declare_upload("ann", 3, at=T0)
    store.record("ann", "a", Stage.UPLOADED, at=T0 + 50)
    assert store.user_status("ann", now=T0 + 100).run.photos == 3


# ETA


def test_eta_is_unknown_until_something_completes(store):
    store.declare_upload("ann", 2, at=T0)
    assert store.user_status("ann", now=T0 + 10).run.eta_s is None


def test_eta_follows_the_rate_since_the_run_started(store):
    for photo in ("a", "b", "c"):
        store.record("ann", photo, Stage.UPLOADED, at=T0)
    store.record("ann", "a", Stage.THUMBNAIL, at=T0 + 5)
    store.record("ann", "b", Stage.THUMBNAIL, at=T0 + 10)
    # 2 completions in 10 s; 4 of 6 stage completions left: 20 s.
    assert store.user_status("ann", now=T0 + 10).run.eta_s == pytest.approx(20.0)


def test_eta_uses_only_the_most_recent_completions(store):
    for index in range(6):
        store.record("ann", f"p{index}", Stage.UPLOADED, at=T0)
    # Slow at first (one per 100 s), then fast (one per second).
    store.record("ann", "p0", Stage.THUMBNAIL, at=T0 + 100)
    store.record("ann", "p1", Stage.THUMBNAIL, at=T0 + 200)
    for index, offset in zip(range(2, 6), (201, 202, 203, 204), strict=True):
        store.record("ann", f"p{index}", Stage.THUMBNAIL, at=T0 + offset)
    # The 4 newest completions took 4 s (since the 5th newest, at T0 + 200): 6 embeddings left.
    assert store.user_status("ann", now=T0 + 204).run.eta_s == pytest.approx(6.0)


def test_eta_stays_put_between_completions_so_polls_can_be_answered_304(store):
    store.record("ann", "a", Stage.UPLOADED, at=T0)
    store.record("ann", "a", Stage.THUMBNAIL, at=T0 + 1)
    assert store.user_status("ann", now=T0 + 1).run.eta_s == 1.0
    assert store.user_status("ann", now=T0 + 60).run.eta_s == 1.0


# Backlog, samples and thresholds for the admin


def test_the_backlog_counts_waiting_photos_and_the_oldest_wait_per_stage(store):
    store.record("ann", "a", Stage.UPLOADED, at=T0)
    store.record("bob", "b", Stage.UPLOADED, at=T0 + 10)
    store.record("bob", "c", Stage.UPLOADED, at=T0 + 20)
    store.record("bob", "c", Stage.THUMBNAIL, at=T0 + 30)
    backlog = store.snapshot(idle_retention_s=3600, now=T0 + 40).backlog
    assert (backlog["thumbnail"].pending, backlog["thumbnail"].oldest_since) == (2, T0)
    assert (backlog["embed"].pending, backlog["embed"].oldest_since) == (1, T0 + 30)


def test_a_photo_leaves_the_backlog_when_it_ends(store):
    process(store, "ann", "a", T0)
    store.record("ann", "b", Stage.UPLOADED, at=T0)
    store.record("ann", "b", Stage.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 1)
    backlog = store.snapshot(idle_retention_s=3600, now=T0 + 5).backlog
    assert (backlog["thumbnail"].pending, backlog["embed"].pending) == (0, 0)
    assert backlog["thumbnail"].oldest_since is None


def test_each_stage_completion_adds_one_latency_sample(store):
    store.record("ann", "a", Stage.UPLOADED, at=T0)
    store.record("ann", "a", Stage.THUMBNAIL, at=T0 + 1, duration_ms=120)
    store.record("ann", "a", Stage.THUMBNAIL, at=T0 + 2, duration_ms=999)
    store.record("ann", "b", Stage.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 3, duration_ms=5)
    samples = store.snapshot(idle_retention_s=3600, now=T0 + 4).samples
    assert [(s.duration_ms, s.reason) for s in samples["thumbnail"]] == [
        (120.0, None),
        (5.0, "corrupt"),
    ]
    assert samples["embed"] == []


def test_samples_older_than_the_window_are_not_read(store):
    store.record("ann", "a", Stage.THUMBNAIL, at=T0, duration_ms=100)
    store.record("ann", "b", Stage.THUMBNAIL, at=T0 + 200, duration_ms=200)
    samples = store.snapshot(idle_retention_s=3600, now=T0 + 400).samples["thumbnail"]
    assert [s.duration_ms for s in samples] == [200.0]


def test_the_sample_window_is_capped_to_the_newest(store, client):
    for index in range(8):
        store.record("ann", f"p{index}", Stage.THUMBNAIL, duration_ms=index)
    assert client.zcard("samples:thumbnail") == 5


def test_thresholds_persist_as_set(store):
    store.set_thresholds({"thumbnail": {"p95_ms": 250.0}, "embed": {"backlog_age_s": 30.0}})
    store.set_thresholds({"thumbnail": {"backlog_age_s": 45.0}})
    assert store.thresholds() == {
        "thumbnail": {"p95_ms": 250.0, "backlog_age_s": 45.0},
        "embed": {"backlog_age_s": 30.0},
    }


def test_the_snapshot_lists_active_users_newest_first(store):
    store.record("ann", "a", Stage.UPLOADED, at=T0)
    store.record("bob", "b", Stage.UPLOADED, at=T0 + 5)
    users = store.snapshot(idle_retention_s=3600, now=T0 + 10).users
    assert [(status.user_id, last) for status, last in users] == [("bob", T0 + 5), ("ann", T0)]


def test_idle_users_leave_the_active_index_after_the_retention(store):
    process(store, "ann", "a", T0)
    store.record("bob", "b", Stage.UPLOADED, at=T0)
    store.snapshot(idle_retention_s=60, now=T0 + 100)
    # ann is idle and old; bob still waits for a thumbnail, however old.
    listed = store.snapshot(idle_retention_s=3600, now=T0 + 101).users
    assert [status.user_id for status, _ in listed] == ["bob"]


# The sweeper: no photo pending forever


@pytest.fixture
def sweeping(client):
    return StatusStore(client, StatusSettings(pending_deadline_s=600, sweep_interval_s=30))


def test_a_photo_pending_past_the_deadline_is_failed_as_timed_out(sweeping):
    sweeping.record("ann", "a.jpg", Stage.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 601) == 1
    status = sweeping.user_status("ann", now=T0 + 601)
    assert (status.phase, status.thumbnails_failed, status.failures[0]["reason"]) == (
        "idle",
        1,
        "timed_out",
    )


def test_a_photo_within_the_deadline_is_left_pending(sweeping):
    sweeping.record("ann", "a.jpg", Stage.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 599) == 0
    assert sweeping.user_status("ann", now=T0 + 599).thumbnails_pending == 1


def test_a_photo_waiting_too_long_for_its_embedding_fails_at_that_stage(sweeping):
    process(sweeping, "ann", "a.jpg", T0, stages=(Stage.UPLOADED, Stage.THUMBNAIL))
    sweeping.sweep(now=T0 + 700)
    status = sweeping.user_status("ann", now=T0 + 700)
    assert (status.thumbnails_done, status.embeddings_failed, status.phase) == (1, 1, "idle")


def test_a_completion_after_the_sweep_counts_as_done_and_no_longer_failed(sweeping):
    sweeping.record("ann", "a.jpg", Stage.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    assert sweeping.record("ann", "a.jpg", Stage.THUMBNAIL, at=T0 + 602)
    status = sweeping.user_status("ann", now=T0 + 602)
    assert (status.thumbnails_done, status.thumbnails_failed) == (1, 0)
    assert (status.run.thumbnails_done, status.run.thumbnails_failed, status.phase) == (
        1,
        0,
        "indexing",
    )


def test_a_late_completion_is_counted_once_however_often_it_is_delivered(sweeping):
    sweeping.record("ann", "a.jpg", Stage.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    sweeping.record("ann", "a.jpg", Stage.THUMBNAIL, at=T0 + 602)
    assert not sweeping.record("ann", "a.jpg", Stage.THUMBNAIL, at=T0 + 603)
    assert sweeping.user_status("ann").thumbnails_done == 1


def test_a_swept_photo_can_be_claimed_again_when_its_event_comes_late(sweeping):
    sweeping.record("ann", "a.jpg", Stage.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    assert sweeping.claim("ann", "a.jpg", Stage.THUMBNAIL).outcome == "claimed"


def test_replicas_sweep_once_per_interval(sweeping):
    sweeping.record("ann", "a.jpg", Stage.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 601) == 1
    sweeping.record("ann", "b.jpg", Stage.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 602) == 0


def test_the_eta_is_done_once_the_sweeper_ends_the_last_pending_photo(sweeping):
    process(sweeping, "ann", "a.jpg", T0)
    sweeping.record("ann", "b.jpg", Stage.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    run = sweeping.user_status("ann", now=T0 + 601).run
    assert (run.finished, run.eta_s, run.progress) == (True, 0.0, 1.0)


# Bounded memory: finished photos' own records are dropped after the retention


@pytest.fixture
def retaining(client):
    return StatusStore(client, StatusSettings(retention_s=3600))


def test_a_finished_photos_record_is_dropped_after_the_retention(retaining, client):
    process(retaining, "ann", "old.jpg", T0)
    process(retaining, "ann", "new.jpg", T0 + 3700)
    assert client.hkeys("photos:{ann}") == ["new.jpg"]


def test_counts_are_kept_when_records_are_dropped(retaining):
    process(retaining, "ann", "old.jpg", T0)
    process(retaining, "ann", "new.jpg", T0 + 3700)
    assert retaining.user_status("ann").embeddings_done == 2


def test_a_pending_photos_record_is_kept_past_the_retention(retaining, client):
    retaining.record("ann", "slow.jpg", Stage.UPLOADED, at=T0)
    process(retaining, "ann", "new.jpg", T0 + 3700)
    assert set(client.hkeys("photos:{ann}")) == {"slow.jpg", "new.jpg"}


def test_an_idle_users_photo_records_expire_with_the_retention(retaining, client):
    process(retaining, "ann", "a.jpg", T0)
    assert 0 < client.ttl("photos:{ann}") <= 3600


def test_redis_memory_is_bounded_by_the_photos_finished_within_the_retention(client):
    """Six thousand photos over three retention periods: only the last period's records stay,
    at under 512 bytes a photo, whatever the history's length."""
    store = StatusStore(client, StatusSettings(retention_s=1000, samples_kept=100))
    client.config_set("maxmemory-policy", "noeviction")
    baseline = client.info("memory")["used_memory"]
    photos, users = 6000, ("ann", "bob", "cai")
    for index in range(photos):
        process(store, users[index % 3], f"photos/IMG_{index:05d}.jpg@v{index}", T0 + index / 2)
    retained = sum(client.hlen(f"photos:{{{user}}}") for user in users)
    per_photo = (client.info("memory")["used_memory"] - baseline) / retained
    assert retained <= 1000 * 2 + 3 * 16, retained  # a photo every 0.5 s; 16 trimmed a write
    assert per_photo < 512, f"{per_photo:.0f} bytes per retained photo"
    assert sum(store.user_status(user).embeddings_done for user in users) == photos
