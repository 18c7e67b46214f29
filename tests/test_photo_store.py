"""The photo store counts each photo once per stage, whatever the delivery order or repeats,
and keeps each user's current run, the declared uploads and the latency samples; its sweep
fails photos pending too long, and finished photos' own records are dropped after the
retention. What it wrote is read back as the status function reads it (StatusReader)."""

import pytest
import redis

from functions.common.config import StatusSettings
from functions.common.errors import TransientError
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE, PhotoState
from functions.status.status_reader import StatusReader

T0 = 1_000_000.0


@pytest.fixture
def client(redis_client):
    return redis_client


@pytest.fixture
def store(client):
    return PhotoStore(
        client,
        StatusSettings(
            failures_kept=3,
            upload_declaration_ttl_s=60,
            eta_completions=4,
            latency_window_s=300,
            samples_kept=5,
        ),
    )


def process(
    store, user, photo, at, stages=(PhotoState.UPLOADED, PhotoState.THUMBNAIL, PhotoState.EMBEDDING)
):
    for offset, stage in enumerate(stages):
        store.record(user, photo, stage, at=at + offset)


def read(store):
    """What the status function reads of `store`'s writes."""
    return StatusReader(store.client, store.settings)


# Counting, once per photo and stage


def test_a_duplicate_upload_counts_once(store, reader):
    assert store.record("ann", "a.jpg", PhotoState.UPLOADED)
    assert not store.record("ann", "a.jpg", PhotoState.UPLOADED)
    assert reader.user_status("ann").uploaded == 1


def test_phase_is_processing_while_thumbnails_are_pending(store, reader):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    store.record("ann", "b.jpg", PhotoState.UPLOADED)
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL)
    assert reader.user_status("ann").phase == "processing"


def test_phase_is_indexing_once_thumbnails_are_done_and_embeddings_pending(store, reader):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL)
    status = reader.user_status("ann")
    assert (status.phase, status.counts["embeddings_pending"]) == ("indexing", 1)


def test_phase_is_idle_when_every_photo_is_embedded(store, reader):
    process(store, "ann", "a.jpg", T0)
    store.record("ann", "b.jpg", PhotoState.UPLOADED)
    store.record("ann", "b.jpg", PhotoState.THUMBNAIL)
    store.record("ann", "b.jpg", PhotoState.EMBEDDING, faces=2)
    status = reader.user_status("ann")
    assert (status.phase, status.counts["embeddings_done"], status.faces) == ("idle", 2, 2)


def test_a_failed_thumbnail_ends_the_photo_so_the_user_reaches_idle(store, reader):
    store.record("ann", "bad.jpg", PhotoState.UPLOADED)
    store.record(
        "ann", "bad.jpg", PhotoState.THUMBNAIL_FAILED, reason="corrupt", detail="truncated"
    )
    status = reader.user_status("ann")
    assert status.phase == "idle"
    assert status.counts["thumbnails_failed"] == 1
    assert status.failures[0]["reason"] == "corrupt"


def test_a_repeated_embedding_does_not_count_its_faces_twice(store, reader):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL)
    store.record("ann", "a.jpg", PhotoState.EMBEDDING, faces=3)
    assert not store.record("ann", "a.jpg", PhotoState.EMBEDDING, faces=3)
    assert reader.user_status("ann").faces == 3


def test_a_late_thumbnail_after_its_embedding_changes_nothing(store, reader):
    process(store, "ann", "a.jpg", T0)
    assert not store.record("ann", "a.jpg", PhotoState.THUMBNAIL)
    assert reader.user_status("ann").counts["thumbnails_done"] == 1


def test_a_photo_first_seen_at_embedding_still_counts_as_uploaded_and_thumbnailed(store, reader):
    store.record("ann", "a.jpg", PhotoState.EMBEDDING)
    status = reader.user_status("ann")
    assert (
        status.uploaded,
        status.counts["thumbnails_done"],
        status.counts["embeddings_done"],
    ) == (1, 1, 1)
    assert status.phase == "idle"


def test_an_upload_recorded_after_its_thumbnail_counts_once_and_waits_for_nothing(store, reader):
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL, at=T0 + 2)
    assert not store.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    status = reader.user_status("ann", now=T0 + 3)
    assert (status.uploaded, status.counts["thumbnails_done"], status.run.uploaded) == (1, 1, 1)
    assert reader.snapshot(idle_retention_s=3600, now=T0 + 3).backlog["thumbnail"].pending == 0


def test_users_are_counted_separately(store, reader):
    store.record("ann", "a.jpg", PhotoState.UPLOADED)
    store.record("bob", "a.jpg", PhotoState.UPLOADED)
    store.record("bob", "b.jpg", PhotoState.UPLOADED)
    assert (reader.user_status("ann").uploaded, reader.user_status("bob").uploaded) == (1, 2)
    listed = reader.snapshot(idle_retention_s=3600).users
    assert sorted(status.user_id for status, _ in listed) == ["ann", "bob"]


def test_only_the_newest_failures_are_kept_newest_first(store, reader):
    for index in range(5):
        store.record("ann", f"{index}.jpg", PhotoState.THUMBNAIL_FAILED, reason="corrupt")
    failures = reader.user_status("ann").failures
    assert [f["photo_id"] for f in failures] == ["4.jpg", "3.jpg", "2.jpg"]


def test_timestamps_record_the_last_upload_and_the_last_thumbnail(store, reader):
    store.record("ann", "a.jpg", PhotoState.UPLOADED, at=100.0)
    store.record("ann", "a.jpg", PhotoState.THUMBNAIL, at=101.5)
    stamps = reader.user_status("ann").timestamps
    assert stamps["first_upload_at"] == 100.0
    assert stamps["last_upload_at"] == 100.0
    assert stamps["last_thumbnail_at"] == 101.5


def test_an_unreachable_redis_is_a_transient_error():
    client = redis.Redis(port=1, socket_connect_timeout=0.2)
    with pytest.raises(TransientError):
        PhotoStore(client).record("ann", "a.jpg", PhotoState.UPLOADED)


# Runs


def test_a_run_counts_each_photo_once_despite_duplicates_and_failures(store, reader):
    for photo in ("a", "b", "c", "d"):
        store.record("ann", photo, PhotoState.UPLOADED, at=T0)
        store.record("ann", photo, PhotoState.UPLOADED, at=T0)
    store.record("ann", "a", PhotoState.THUMBNAIL, at=T0 + 1)
    store.record("ann", "a", PhotoState.THUMBNAIL, at=T0 + 1)
    store.record("ann", "b", PhotoState.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 1)
    store.record("ann", "b", PhotoState.THUMBNAIL, at=T0 + 2)
    store.record("ann", "c", PhotoState.THUMBNAIL, at=T0 + 1)
    store.record("ann", "c", PhotoState.EMBEDDING_FAILED, reason="too_large", at=T0 + 2)
    store.record("ann", "a", PhotoState.EMBEDDING, faces=2, at=T0 + 2)
    store.record("ann", "a", PhotoState.EMBEDDING, faces=2, at=T0 + 3)
    run = reader.user_status("ann", now=T0 + 3).run
    assert (run.uploaded, run.counts["thumbnails_done"], run.counts["thumbnails_failed"]) == (
        4,
        2,
        1,
    )
    assert (run.counts["embeddings_done"], run.counts["embeddings_failed"], run.faces) == (1, 1, 2)
    assert (run.counts["thumbnails_pending"], run.counts["embeddings_pending"]) == (1, 0)


def test_a_photo_arriving_after_the_run_finished_starts_a_new_run(store, reader):
    process(store, "ann", "a", T0)
    process(store, "ann", "b", T0)
    store.record("ann", "c", PhotoState.UPLOADED, at=T0 + 100)
    status = reader.user_status("ann", now=T0 + 100)
    assert (status.run.started_at, status.run.uploaded, status.run.photos) == (T0 + 100, 1, 1)
    assert status.uploaded == 3


def test_a_photo_arriving_while_the_run_is_busy_joins_it(store, reader):
    store.record("ann", "a", PhotoState.UPLOADED, at=T0)
    store.record("ann", "b", PhotoState.UPLOADED, at=T0 + 5)
    run = reader.user_status("ann", now=T0 + 5).run
    assert (run.started_at, run.uploaded) == (T0, 2)


def test_a_finished_run_keeps_its_counts_until_the_next_one_starts(store, reader):
    process(store, "ann", "a", T0)
    run = reader.user_status("ann", now=T0 + 1000).run
    assert run.finished
    assert (run.uploaded, run.counts["embeddings_done"], run.progress, run.eta_s) == (
        1,
        1,
        1.0,
        0.0,
    )


def test_progress_counts_a_failed_thumbnail_as_the_end_of_its_photo(store, reader):
    store.record("ann", "a", PhotoState.UPLOADED, at=T0)
    store.record("ann", "b", PhotoState.UPLOADED, at=T0)
    store.record("ann", "a", PhotoState.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 1)
    store.record("ann", "b", PhotoState.THUMBNAIL, at=T0 + 1)
    # Work: b's thumbnail and embedding, a's thumbnail; two of three done.
    assert reader.user_status("ann", now=T0 + 2).run.progress == pytest.approx(2 / 3)


# Declared uploads (the expected count)


def test_a_declared_upload_is_processing_before_any_photo_arrives(store, reader):
    store.declare_upload("ann", 3, at=T0)
    status = reader.user_status("ann", now=T0 + 1)
    assert status.phase == "processing"
    assert (status.run.photos, status.run.uploaded, status.run.counts["thumbnails_pending"]) == (
        3,
        0,
        3,
    )


def test_a_declared_run_is_not_finished_while_declared_photos_are_still_in_flight(store, reader):
    store.declare_upload("ann", 3, at=T0)
    process(store, "ann", "a", T0 + 1)
    process(store, "ann", "b", T0 + 1)
    status = reader.user_status("ann", now=T0 + 5)
    assert status.phase == "processing"
    assert (status.run.counts["embeddings_done"], status.run.counts["thumbnails_pending"]) == (2, 1)
    process(store, "ann", "c", T0 + 6)
    assert reader.user_status("ann", now=T0 + 10).phase == "idle"


def test_photos_of_a_declared_upload_join_its_run(store, reader):
    store.declare_upload("ann", 2, at=T0)
    store.record("ann", "a", PhotoState.UPLOADED, at=T0 + 1)
    run = reader.user_status("ann", now=T0 + 1).run
    assert (run.started_at, run.uploaded, run.photos) == (T0, 1, 2)


def test_a_declaration_during_a_busy_run_adds_to_its_photos(store, reader):
    store.record("ann", "a", PhotoState.UPLOADED, at=T0)
    store.record("ann", "b", PhotoState.UPLOADED, at=T0)
    store.declare_upload("ann", 5, at=T0 + 1)
    assert reader.user_status("ann", now=T0 + 1).run.photos == 7


def test_a_declaration_whose_photos_never_arrive_expires(store, reader):
    store.declare_upload("ann", 3, at=T0)
    process(store, "ann", "a", T0 + 1)
    assert reader.user_status("ann", now=T0 + 30).phase == "processing"
    status = reader.user_status("ann", now=T0 + 1 + 61)
    assert (status.phase, status.run.photos) == ("idle", 1)


def test_each_arriving_photo_extends_the_declaration(store, reader):
    store.declare_upload("ann", 3, at=T0)
    store.record("ann", "a", PhotoState.UPLOADED, at=T0 + 50)
    assert reader.user_status("ann", now=T0 + 100).run.photos == 3


# Latency samples


def test_each_stage_completion_adds_one_latency_sample(store, reader):
    store.record("ann", "a", PhotoState.UPLOADED, at=T0)
    store.record("ann", "a", PhotoState.THUMBNAIL, at=T0 + 1, duration_ms=120)
    store.record("ann", "a", PhotoState.THUMBNAIL, at=T0 + 2, duration_ms=999)
    store.record(
        "ann", "b", PhotoState.THUMBNAIL_FAILED, reason="corrupt", at=T0 + 3, duration_ms=5
    )
    samples = reader.snapshot(idle_retention_s=3600, now=T0 + 4).samples
    assert [(s.duration_ms, s.reason) for s in samples["thumbnail"]] == [
        (120.0, None),
        (5.0, "corrupt"),
    ]
    assert samples["embed"] == []


def test_the_sample_window_is_capped_to_the_newest(store, client):
    for index in range(8):
        store.record("ann", f"p{index}", PhotoState.THUMBNAIL, duration_ms=index)
    assert client.zcard("samples:thumbnail") == 5


# The sweeper: no photo pending forever


@pytest.fixture
def sweeping(client):
    return PhotoStore(client, StatusSettings(pending_deadline_s=600, sweep_interval_s=30))


def test_a_photo_pending_past_the_deadline_is_failed_as_timed_out(sweeping):
    sweeping.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 601) == 1
    status = read(sweeping).user_status("ann", now=T0 + 601)
    assert (status.phase, status.counts["thumbnails_failed"], status.failures[0]["reason"]) == (
        "idle",
        1,
        "timed_out",
    )


def test_a_photo_within_the_deadline_is_left_pending(sweeping):
    sweeping.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 599) == 0
    assert read(sweeping).user_status("ann", now=T0 + 599).counts["thumbnails_pending"] == 1


def test_a_photo_waiting_too_long_for_its_embedding_fails_at_that_stage(sweeping):
    process(sweeping, "ann", "a.jpg", T0, stages=(PhotoState.UPLOADED, PhotoState.THUMBNAIL))
    sweeping.sweep(now=T0 + 700)
    status = read(sweeping).user_status("ann", now=T0 + 700)
    assert (status.counts["thumbnails_done"], status.counts["embeddings_failed"], status.phase) == (
        1,
        1,
        "idle",
    )


def test_a_completion_after_the_sweep_counts_as_done_and_no_longer_failed(sweeping):
    sweeping.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    assert sweeping.record("ann", "a.jpg", PhotoState.THUMBNAIL, at=T0 + 602)
    status = read(sweeping).user_status("ann", now=T0 + 602)
    assert (status.counts["thumbnails_done"], status.counts["thumbnails_failed"]) == (1, 0)
    assert (
        status.run.counts["thumbnails_done"],
        status.run.counts["thumbnails_failed"],
        status.phase,
    ) == (
        1,
        0,
        "indexing",
    )


def test_a_late_completion_is_counted_once_however_often_it_is_delivered(sweeping):
    sweeping.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    sweeping.record("ann", "a.jpg", PhotoState.THUMBNAIL, at=T0 + 602)
    assert not sweeping.record("ann", "a.jpg", PhotoState.THUMBNAIL, at=T0 + 603)
    assert read(sweeping).user_status("ann").counts["thumbnails_done"] == 1


def test_a_swept_photo_can_be_claimed_again_when_its_event_comes_late(sweeping):
    sweeping.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    assert sweeping.claim("ann", "a.jpg", PIPELINE["thumbnail"]).outcome == "claimed"


def test_replicas_sweep_once_per_interval(sweeping):
    sweeping.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 601) == 1
    sweeping.record("ann", "b.jpg", PhotoState.UPLOADED, at=T0)
    assert sweeping.sweep(now=T0 + 602) == 0


def test_the_eta_is_done_once_the_sweeper_ends_the_last_pending_photo(sweeping):
    process(sweeping, "ann", "a.jpg", T0)
    sweeping.record("ann", "b.jpg", PhotoState.UPLOADED, at=T0)
    sweeping.sweep(now=T0 + 601)
    run = read(sweeping).user_status("ann", now=T0 + 601).run
    assert (run.finished, run.eta_s, run.progress) == (True, 0.0, 1.0)


# Bounded memory: finished photos' own records are dropped after the retention


@pytest.fixture
def retaining(client):
    return PhotoStore(client, StatusSettings(retention_s=3600))


def test_a_finished_photos_record_is_dropped_after_the_retention(retaining, client):
    process(retaining, "ann", "old.jpg", T0)
    process(retaining, "ann", "new.jpg", T0 + 3700)
    assert client.hkeys("photos:{ann}") == ["new.jpg"]


def test_counts_are_kept_when_records_are_dropped(retaining):
    process(retaining, "ann", "old.jpg", T0)
    process(retaining, "ann", "new.jpg", T0 + 3700)
    assert read(retaining).user_status("ann").counts["embeddings_done"] == 2


def test_a_pending_photos_record_is_kept_past_the_retention(retaining, client):
    retaining.record("ann", "slow.jpg", PhotoState.UPLOADED, at=T0)
    process(retaining, "ann", "new.jpg", T0 + 3700)
    assert set(client.hkeys("photos:{ann}")) == {"slow.jpg", "new.jpg"}


def test_an_idle_users_photo_records_expire_with_the_retention(retaining, client):
    process(retaining, "ann", "a.jpg", T0)
    assert 0 < client.ttl("photos:{ann}") <= 3600


def test_redis_memory_is_bounded_by_the_photos_finished_within_the_retention(client, reader):
    """Six thousand photos over three retention periods: only the last period's records stay,
    at under 512 bytes a photo, whatever the history's length."""
    store = PhotoStore(client, StatusSettings(retention_s=1000, samples_kept=100))
    client.config_set("maxmemory-policy", "noeviction")
    baseline = client.info("memory")["used_memory"]
    photos, users = 6000, ("ann", "bob", "cai")
    for index in range(photos):
        process(store, users[index % 3], f"photos/IMG_{index:05d}.jpg@v{index}", T0 + index / 2)
    retained = sum(client.hlen(f"photos:{{{user}}}") for user in users)
    per_photo = (client.info("memory")["used_memory"] - baseline) / retained
    assert retained <= 1000 * 2 + 3 * 16, retained  # a photo every 0.5 s; 16 trimmed a write
    assert per_photo < 512, f"{per_photo:.0f} bytes per retained photo"
    assert sum(reader.user_status(user).counts["embeddings_done"] for user in users) == photos
