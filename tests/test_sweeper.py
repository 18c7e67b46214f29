"""The status function's sweeper thread ends photos whose events were lost."""

import time

import redis

from functions.common.config import StatusSettings
from functions.common.logs import ContextFilter
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PhotoState
from functions.status.status_reader import StatusReader
from functions.status.sweeper import Sweeper


def test_the_sweeper_fails_a_photo_whose_event_was_lost_while_it_runs(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    store = PhotoStore(client, StatusSettings(pending_deadline_s=1, sweep_interval_s=0.05))
    store.record("ann", "lost.jpg", PhotoState.UPLOADED, at=time.time() - 5)
    reader = StatusReader(client)
    sweeper = Sweeper(store, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 5
        while (
            reader.user_status("ann").counts["thumbnails_failed"] == 0
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    finally:
        sweeper.stop()
    assert reader.user_status("ann").failures[0]["reason"] == "timed_out"


def test_the_sweeper_survives_an_unreachable_redis(refused_port):
    dead = PhotoStore(redis.Redis(port=refused_port, socket_connect_timeout=0.2))
    sweeper = Sweeper(dead, interval_s=0.02).start()
    time.sleep(0.2)
    assert sweeper.running
    sweeper.stop()


def test_each_photo_the_sweep_fails_is_one_warning_naming_its_user_photo_and_reason(
    redis_server, caplog
):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    store = PhotoStore(client, StatusSettings(pending_deadline_s=1, sweep_interval_s=0.05))
    for name in ("a.jpg", "b.jpg"):
        store.record("ann", name, PhotoState.UPLOADED, at=time.time() - 5)
    caplog.handler.addFilter(ContextFilter())  # as the JSON log handler has it (logs.py)
    with caplog.at_level("WARNING"):
        assert store.sweep() == 2
        assert store.sweep(now=time.time() + 1) == 0
    warnings = [(r.user, r.key, r.reason) for r in caplog.records if r.levelname == "WARNING"]
    assert sorted(warnings) == [("ann", "a.jpg", "timed_out"), ("ann", "b.jpg", "timed_out")]
