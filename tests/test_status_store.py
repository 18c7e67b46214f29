"""The status store counts each photo once per stage, whatever the delivery order or repeats."""

import pytest
import redis

from functions.common.errors import TransientError
from functions.common.status_store import Stage, StatusStore


@pytest.fixture
def store(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    return StatusStore(client, failures_kept=3)


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
    store.record("ann", "a.jpg", Stage.UPLOADED)
    store.record("ann", "a.jpg", Stage.THUMBNAIL)
    store.record("ann", "a.jpg", Stage.EMBEDDING, faces=2)
    status = store.user_status("ann")
    assert (status.phase, status.embeddings_done, status.faces) == ("idle", 1, 2)


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
    store.record("ann", "a.jpg", Stage.UPLOADED)
    store.record("ann", "a.jpg", Stage.THUMBNAIL)
    store.record("ann", "a.jpg", Stage.EMBEDDING)
    assert not store.record("ann", "a.jpg", Stage.THUMBNAIL)
    assert store.user_status("ann").thumbnails_done == 1


def test_a_photo_first_seen_at_embedding_still_counts_as_uploaded_and_thumbnailed(store):
    store.record("ann", "a.jpg", Stage.EMBEDDING)
    status = store.user_status("ann")
    assert (status.uploaded, status.thumbnails_done, status.embeddings_done) == (1, 1, 1)
    assert status.phase == "idle"


def test_users_are_counted_separately(store):
    store.record("ann", "a.jpg", Stage.UPLOADED)
    store.record("bob", "a.jpg", Stage.UPLOADED)
    store.record("bob", "b.jpg", Stage.UPLOADED)
    assert (store.user_status("ann").uploaded, store.user_status("bob").uploaded) == (1, 2)
    assert store.users() == ["ann", "bob"]


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
