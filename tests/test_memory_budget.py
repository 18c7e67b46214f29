"""A worker process's memory budget for decoding: photos that fit run, photos that fit later wait
their turn, a photo that never fits fails for good, and one that waits too long is retried. Each
stage's Service sets a budget its pods' memory limit holds."""

import threading
import time

import pytest

from devstack import photos
from functions.common.config import InputLimits
from functions.common.errors import PermanentError, TransientError
from functions.common.memory_budget import MIB, MemoryBudget
from functions.thumbnail.imaging import thumbnail_peak_bytes
from functions.thumbnail.settings import ThumbnailSettings
from tests.knative_manifests import container, find, knative_service, literal_env, rendered

WAIT_S = 5.0


def reserve_in_thread(budget: MemoryBudget, nbytes: int, events: list[str], name: str):
    """Reserve `nbytes` in a new thread, recording `name` once it is in; hold it until the
    returned event is set."""
    release = threading.Event()

    def hold() -> None:
        with budget.reserve(nbytes):
            events.append(name)
            release.wait(WAIT_S)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread, release


def wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


def test_a_photo_that_fits_runs_at_once():
    budget = MemoryBudget(100 * MIB, wait_s=0)
    ran = []

    with budget.reserve(60 * MIB), budget.reserve(40 * MIB):
        ran.append("both")

    assert ran == ["both"]


def test_a_photo_waits_for_room_then_proceeds():
    budget = MemoryBudget(100 * MIB, wait_s=WAIT_S)
    events: list[str] = []
    first, release_first = reserve_in_thread(budget, 70 * MIB, events, "first")
    wait_until(lambda: events == ["first"])
    second, release_second = reserve_in_thread(budget, 70 * MIB, events, "second")

    time.sleep(0.1)
    assert events == ["first"]
    release_first.set()
    wait_until(lambda: events == ["first", "second"])
    release_second.set()
    for thread in (first, second):
        thread.join(WAIT_S)


def test_a_photo_over_the_whole_budget_fails_as_too_large():
    budget = MemoryBudget(100 * MIB)

    with pytest.raises(PermanentError) as raised, budget.reserve(101 * MIB):
        pass

    assert raised.value.reason == "too_large"
    assert "needs 101 MiB" in raised.value.detail
    assert "budget of 100 MiB" in raised.value.detail


def test_a_photo_that_finds_no_room_in_time_is_retried():
    budget = MemoryBudget(100 * MIB, wait_s=0.05)

    with budget.reserve(70 * MIB), pytest.raises(TransientError), budget.reserve(70 * MIB):
        pass


def test_the_reservation_is_given_back_when_decoding_fails():
    budget = MemoryBudget(100 * MIB, wait_s=0)

    with pytest.raises(RuntimeError), budget.reserve(100 * MIB):
        raise RuntimeError("corrupt data")

    with budget.reserve(100 * MIB):
        pass


def test_a_waiting_large_photo_is_not_passed_by_smaller_ones():
    budget = MemoryBudget(100 * MIB, wait_s=WAIT_S)
    events: list[str] = []
    first, release_first = reserve_in_thread(budget, 60 * MIB, events, "first")
    wait_until(lambda: events == ["first"])
    large, release_large = reserve_in_thread(budget, 90 * MIB, events, "large")
    time.sleep(0.1)  # the large photo is in line

    small, release_small = reserve_in_thread(budget, 20 * MIB, events, "small")
    time.sleep(0.1)
    assert events == ["first"]  # the small one would fit, but the large one is first in line
    release_first.set()
    wait_until(lambda: events == ["first", "large"])
    release_large.set()
    wait_until(lambda: events == ["first", "large", "small"])
    release_small.set()
    for thread in (first, large, small):
        thread.join(WAIT_S)


def test_each_worker_process_gets_its_share_of_the_pods_budget(monkeypatch):
    monkeypatch.setenv("DECODE_MEMORY_BUDGET_MB", "640")
    monkeypatch.setenv("WEB_CONCURRENCY", "2")

    assert MemoryBudget.for_process(InputLimits.from_env()).total_bytes == 320 * MIB


def test_the_default_budget_is_sized_for_a_1_gib_pod_of_two_workers():
    assert InputLimits().process_memory_budget_bytes == 320 * MIB


@pytest.mark.parametrize(
    ("name", "value"), [("DECODE_MEMORY_BUDGET_MB", "0"), ("WEB_CONCURRENCY", "0")]
)
def test_a_budget_without_room_is_refused_at_start(monkeypatch, name, value):
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=name):
        InputLimits.from_env()


def deployed_limits(monkeypatch, service: str) -> InputLimits:
    """The InputLimits the Service's pods read: the ConfigMap, overridden by its own env."""
    config = find(rendered(), "v1", "ConfigMap", "photo-pipeline")["data"]
    for name, value in {**config, **literal_env(knative_service(service))}.items():
        monkeypatch.setenv(name, value)
    return InputLimits.from_env()


@pytest.mark.parametrize(("service", "limit"), [("thumbnail", "1536Mi"), ("embed", "3Gi")])
def test_each_stages_budget_is_under_its_pods_memory_limit(monkeypatch, service, limit):
    limits = container(knative_service(service))["resources"]["limits"]
    assert limits["memory"] == limit
    limit_mib = int(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    # A third at least is left to the processes themselves: gunicorn, the workers, the model.
    assert deployed_limits(monkeypatch, service).memory_budget_bytes <= limit_mib * MIB * 2 // 3


def test_a_deployed_thumbnail_worker_takes_the_issues_16_bit_photo(monkeypatch):
    issues_photo = photos.large_png(10_000, 10_000, bit_depth=16, colour_type=0, pixel=b"\0\0")
    share = deployed_limits(monkeypatch, "thumbnail").process_memory_budget_bytes

    assert thumbnail_peak_bytes(issues_photo, ThumbnailSettings()) <= share
