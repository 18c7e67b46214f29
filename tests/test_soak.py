"""`make soak`, briefly, on the session's local stack; how it judges memory growth; and the
faults `--faults` injects."""

import time

import pytest
import redis
import requests

from devstack.processes import children
from devstack.stack import Processes
from scripts import soak
from scripts.soak import FAULT_KINDS, Sample, fault_schedule, memory_growth_mb
from tests.stack_fixtures import run_script


def sample(elapsed_s: float, embed_mb: float) -> Sample:
    return Sample(elapsed_s, {"embed": embed_mb, "status": 50.0}, 1.0, 0, 0)


@pytest.fixture(scope="module")
def soak_run(stack):
    """A 9-second soak at 2 photos/s for 2 users, its exit status and printed lines. So short a
    run is mostly the functions' warm-up, which the memory rule would take for growth: the rule
    has its own tests below."""
    options = {"minutes": 0.15, "rate": 2, "users": 2, "sample-every": 3, "max-growth-mb": 1000}
    args = soak.parse_args(
        [part for name, value in options.items() for part in (f"--{name}", str(value))]
    )
    return run_script(soak.run, stack, args)


def test_a_short_soak_loses_no_photo_and_says_so_last(soak_run):
    status, printed = soak_run
    summary = dict(item.split("=") for item in printed[-1].removeprefix("soak: ").split())
    assert status == 0, "\n".join(printed[-12:])
    # 18 slots at 2/s in 9 s; an upload slower than its slot skips the next ones
    assert int(summary["photos"]) >= 9
    assert summary["lost"] == summary["failed"] == summary["miscounted"] == "0"
    assert summary["double_called"] == summary["stuck"] == "0"
    assert summary["embeddings"] == summary["thumbnails"] == summary["photos"]
    assert list(summary)[-8:] == [
        "photos",
        "thumbnails",
        "embeddings",
        "failed",
        "lost",
        "double_called",
        "stuck",
        "rss_growth_mb",
    ]


def test_the_soak_samples_every_parts_memory_while_it_runs(soak_run):
    _, printed = soak_run
    header = printed.index("resident memory (MB) of each part, and Redis's own accounting")
    columns = printed[header + 1].split()
    rows = [line.split() for line in printed[header + 3 :]]
    rows = [row for row in rows if row and row[0].isdigit()]
    assert columns[1 : 1 + len(soak.WATCHED)] == list(soak.WATCHED)
    assert len(rows) >= 3
    assert all(float(mb) > 0 for row in rows for mb in row[1 : 1 + len(soak.WATCHED)])


def test_memory_growth_is_measured_over_the_second_half_of_the_load():
    samples = [sample(0, 100), sample(30, 300), sample(60, 310), sample(90, 330), sample(120, 340)]
    # Warm-up (100 -> 300 MB) is not growth; the second half's peak over the first's (60 s) is.
    assert memory_growth_mb(samples, load_s=120) == {"embed": 30.0, "status": 0.0}


def test_memory_given_back_between_requests_and_taken_again_is_no_growth():
    levels = [376, 410, 376, 376, 410, 376, 376, 410]
    samples = [sample(30 * index, mb) for index, mb in enumerate(levels)]
    assert memory_growth_mb(samples, load_s=210)["embed"] == 0.0


def test_samples_taken_while_draining_do_not_count_as_growth():
    samples = [sample(0, 100), sample(50, 100), sample(100, 100), sample(400, 900)]
    assert memory_growth_mb(samples, load_s=100)["embed"] == 0.0


def test_the_fault_schedule_injects_each_fault_once_within_the_load_as_its_seed_says():
    schedule = fault_schedule(load_s=300, seed=7)
    assert sorted(fault.kind for fault in schedule) == sorted(FAULT_KINDS)
    times = [fault.at_s for fault in schedule]
    assert times == sorted(times)
    assert times[0] >= 30 and times[-1] <= 240  # 10 % to 80 % of the load
    assert all(5 <= fault.window_s <= 10 for fault in schedule)
    assert fault_schedule(load_s=300, seed=7) == schedule != fault_schedule(load_s=300, seed=8)


def test_a_killed_worker_is_replaced_by_its_gunicorn_master(stack):
    master = stack.pids()["thumbnail"]
    workers = children(master)
    killed = stack.kill_worker("thumbnail")
    assert killed in workers
    deadline = time.monotonic() + 30
    while killed in children(master) or len(children(master)) < len(workers):
        assert time.monotonic() < deadline, f"workers of thumbnail: {children(master)}"
        time.sleep(0.1)
    assert stack.pids()["thumbnail"] == master
    assert requests.get(f"{stack.urls['thumbnail']}/healthz", timeout=5).ok


def test_a_restarted_redis_keeps_its_data_on_the_same_port(tmp_path):
    with Processes(tmp_path) as processes:
        url = processes.redis()
        redis.Redis.from_url(url).hset("photos:{u}", "u/photos/a.jpg@v1", "embedding")
        pid = processes.pids()["redis"]
        processes.restart("redis")
        assert processes.pids()["redis"] != pid
        state = redis.Redis.from_url(url).hget("photos:{u}", "u/photos/a.jpg@v1")
    assert state == b"embedding"
