"""Lanes: a user with a few photos never waits behind another user's thousands.

A broker delivers first come, first served. So the receiver puts each upload in a lane, the
CloudEvent extension attribute `lane`: `interactive` until its user has LANE_INTERACTIVE_BACKLOG
photos waiting at any stage (a small upload, or the first photos of a large one), then `bulk`
until none of theirs is waiting any more, so that a user whose backlog hovers around the
threshold does not flip between the lanes. Every stage's reply keeps its photo's lane, and
each stage has a Trigger per lane (eventing/triggers.yaml) to its own Knative Service (the
bulk lane's is `<stage>-bulk`: same image, its own scaling), so a bulk backlog never queues
in front of an interactive photo.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudevents.v1.http import CloudEvent

LANE_EXTENSION = "lane"


class Lane(StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


def next_lane(waiting: int, in_bulk: bool, interactive_below: int) -> Lane:
    """The lane of a user's next upload, given their photos waiting at any stage and whether
    their uploads went in the bulk lane so far."""
    if waiting == 0:
        return Lane.INTERACTIVE
    return Lane.BULK if in_bulk or waiting >= interactive_below else Lane.INTERACTIVE


def lane_of(event: CloudEvent) -> Lane:
    """The lane an event travels in; interactive for one that carries none (published before
    lanes existed, or by hand)."""
    try:
        return Lane(event.get(LANE_EXTENSION))
    except ValueError:
        return Lane.INTERACTIVE


def service_name(stage: str, lane: Lane) -> str:
    """The Knative Service that runs `stage` for `lane`: the interactive lane keeps the stage's
    own name (embed's min-scale=1 warm pod among them), the others are `<stage>-<lane>`."""
    return stage if lane is Lane.INTERACTIVE else f"{stage}-{lane}"
