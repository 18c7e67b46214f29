"""Lanes (functions/common/lanes.py): which lane an upload takes, which lane an event travels
in, and which Knative Service runs a stage for a lane."""

import os
from pathlib import Path

from functions.common.events import OBJECT_CREATED, PhotoRef, new_event, photo_data
from functions.common.lanes import Lane, lane_of, next_lane, service_name
from functions.common.pipeline import PIPELINE

PHOTO = PhotoRef("photos", "ann/1.jpg", "v1", "ann")


def test_a_backlog_below_the_threshold_is_interactive():
    assert next_lane(9, in_bulk=False, interactive_below=10) is Lane.INTERACTIVE


def test_a_backlog_at_the_threshold_is_bulk():
    assert next_lane(10, in_bulk=False, interactive_below=10) is Lane.BULK


def test_a_user_in_the_bulk_lane_stays_there_while_any_photo_of_theirs_waits():
    assert next_lane(1, in_bulk=True, interactive_below=10) is Lane.BULK


def test_a_user_with_nothing_waiting_is_back_in_the_interactive_lane():
    assert next_lane(0, in_bulk=True, interactive_below=10) is Lane.INTERACTIVE


def test_an_event_carries_its_lane_as_an_extension_attribute():
    event = new_event(OBJECT_CREATED, "/test", PHOTO, photo_data(PHOTO), lane=Lane.BULK)
    assert (event["lane"], lane_of(event)) == ("bulk", Lane.BULK)


def test_an_event_without_a_lane_travels_in_the_interactive_lane():
    event = new_event(OBJECT_CREATED, "/test", PHOTO, photo_data(PHOTO))
    del event["lane"]
    assert lane_of(event) is Lane.INTERACTIVE


def test_the_interactive_lane_runs_on_the_stages_own_service_and_bulk_on_its_bulk_service():
    assert service_name("embed", Lane.INTERACTIVE) == "embed"
    assert service_name("embed", Lane.BULK) == "embed-bulk"


def test_the_local_stack_runs_the_bulk_lanes_servers_at_the_lowest_cpu_priority(stack):
    for stage in PIPELINE:
        bulk = stack.pids()[service_name(stage.name, Lane.BULK)]
        interactive = stack.pids()[stage.name]
        assert os.getpriority(os.PRIO_PROCESS, bulk) == 19
        assert os.getpriority(os.PRIO_PROCESS, interactive) == 0
        autogroup = Path(f"/proc/{bulk}/autogroup")
        if autogroup.exists():  # the scheduler groups each session: the group is niced too
            assert autogroup.read_text().split()[-1] == "19"
