"""Issue #14, "fair to the small uploader", in the manifests: every stage has one Trigger per lane
(functions/common/lanes.py), filtering on the event's `lane` attribute, to that lane's own
Knative Service, so a bulk backlog never queues in front of a user's first photos. A stage's
Triggers differ only in what makes them a lane's, and its lanes' Services run the same
function the same way (knative/app/lanes/bulk/ renames the stage's Service, it does not copy it):
only the interactive embed keeps a warm pod."""

from __future__ import annotations

import copy

import pytest
from cloudevents.v1.http import CloudEvent

from devstack.local_broker import parse_filter
from functions.common.events import PhotoRef, new_event, photo_data
from functions.common.lanes import LANE_EXTENSION, Lane, service_name
from functions.common.pipeline import PIPELINE, Stage
from tests.knative_manifests import (
    ALERTS,
    KSVC,
    OVERLAYS,
    annotations,
    container,
    knative_service,
    knative_services,
    rendered,
    triggers,
    validation_errors,
)
from tests.security.test_cluster_manifests import selects

MIN_SCALE = "autoscaling.knative.dev/min-scale"
STAGES = pytest.mark.parametrize("stage", list(PIPELINE), ids=lambda stage: stage.name)
LANE_SERVICES = [service_name(stage.name, lane) for stage in PIPELINE for lane in Lane]


def an_event(event_type: str, lane: Lane | None) -> CloudEvent:
    """A CloudEvent of `event_type` in `lane`; in none (published before lanes) for None."""
    photo = PhotoRef("photos", "ann/1.jpg", "v1", "ann")
    event = new_event(event_type, "/test", photo, photo_data(photo), lane=lane or Lane.INTERACTIVE)
    if lane is None:
        del event[LANE_EXTENSION]
    return event


def takes(trigger: dict, event: CloudEvent) -> bool:
    """Whether the Trigger's `filters` pass the event (evaluated as the local broker does)."""
    return all(parse_filter(expression)(event) for expression in trigger["spec"]["filters"])


def stage_triggers(stage: Stage, overlay: str) -> list[dict]:
    """The Triggers that take some event of the type that starts `stage`."""
    events = [an_event(stage.trigger, lane) for lane in (*Lane, None)]
    return [t for t in triggers(overlay) if any(takes(t, event) for event in events)]


@pytest.mark.parametrize("overlay", OVERLAYS)
@STAGES
@pytest.mark.parametrize("lane", [*Lane, None], ids=lambda lane: str(lane or "no lane"))
def test_each_event_is_taken_by_exactly_one_trigger_its_lanes_to_that_lanes_own_service(
    overlay, stage, lane
):
    """One Trigger per lane, none taking another lane's events; an event without a lane goes
    to the interactive lane rather than nowhere."""
    [trigger] = [t for t in triggers(overlay) if takes(t, an_event(stage.trigger, lane))]
    lane_service = service_name(stage.name, lane or Lane.INTERACTIVE)
    assert trigger["metadata"]["name"] == lane_service
    ref = trigger["spec"]["subscriber"]["ref"]
    assert ((ref["apiVersion"], ref["kind"]), ref["name"]) == (KSVC, lane_service)


def test_no_trigger_takes_an_event_no_stage_starts_from():
    stray = [an_event("something.else", lane) for lane in (*Lane, None)]
    assert not [t for t in triggers() for event in stray if takes(t, event)]


def without_lane(trigger: dict) -> dict:
    """A Trigger less what makes it a lane's: its name, its filters, its subscriber."""
    rest = copy.deepcopy(trigger)
    del rest["metadata"]["name"]
    del rest["spec"]["filters"]
    del rest["spec"]["subscriber"]["ref"]["name"]
    return rest


@pytest.mark.parametrize("overlay", OVERLAYS)
@STAGES
def test_a_stages_triggers_are_identical_but_for_their_lane(overlay, stage):
    """Same broker, event type, audience (the stage's: one function), retries, timeout and
    dead-letter sink in every lane."""
    first, *others = [without_lane(t) for t in stage_triggers(stage, overlay)]
    assert others
    assert all(other == first for other in others)
    assert first["spec"]["subscriber"]["audience"] == (
        f"serving.knative.dev/service/{first['metadata']['namespace']}/{stage.name}"
    )


def without_name_min_scale_and_priority(service: dict) -> dict:
    rest = copy.deepcopy(service)
    del rest["metadata"]["name"]
    rest["spec"]["template"]["metadata"]["annotations"].pop(MIN_SCALE, None)
    rest["spec"]["template"]["spec"].pop("priorityClassName", None)
    return rest


@pytest.mark.parametrize("overlay", OVERLAYS)
@STAGES
def test_each_lanes_service_is_its_stages_service_but_for_name_min_scale_and_priority(
    overlay, stage
):
    """Same image, env (the OIDC audience and both lanes' senders included), resources,
    probes, volumes, concurrency and max-scale: the bulk lane scales on its own, nothing else."""
    interactive = knative_service(stage.name, overlay)
    assert container(interactive)["image"] == f"photo-pipeline/{stage.name}"
    for lane in Lane:
        service = knative_service(service_name(stage.name, lane), overlay)
        assert container(service)["image"] == container(interactive)["image"]
        assert without_name_min_scale_and_priority(service) == (
            without_name_min_scale_and_priority(interactive)
        )


def priority_of(service: dict) -> int:
    """Its pods' priority: their PriorityClass's value, 0 without one (no class is the
    cluster's default here)."""
    name = service["spec"]["template"]["spec"].get("priorityClassName")
    classes = {
        m["metadata"]["name"]: m["value"] for m in rendered() if m["kind"] == "PriorityClass"
    }
    assert not any(m.get("globalDefault") for m in rendered() if m["kind"] == "PriorityClass")
    return 0 if name is None else classes[name]


def test_bulk_pods_run_below_every_other_pod_and_never_preempt():
    """So the scheduler evicts bulk pods, and only them, to place an interactive stage's pod
    on a full cluster."""
    for service in knative_services():
        bulk = service["metadata"]["name"].endswith(f"-{Lane.BULK}")
        assert (priority_of(service) < 0) == bulk, service["metadata"]["name"]
    [bulk_class] = [m for m in rendered() if m["kind"] == "PriorityClass"]
    assert bulk_class["preemptionPolicy"] == "Never"
    for workload in rendered():
        if workload["kind"] in {"Deployment", "StatefulSet"}:
            assert "priorityClassName" not in workload["spec"]["template"]["spec"]


def test_only_the_interactive_embed_keeps_a_pod_warm():
    scales = {
        name: annotations(knative_service(name)).get(MIN_SCALE, "0") for name in LANE_SERVICES
    }
    assert scales == {
        "thumbnail": "0",
        "thumbnail-bulk": "0",
        "embed": "1",
        "embed-bulk": "0",
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_lanes_service_and_trigger_is_rendered_and_valid(overlay):
    manifests = rendered(overlay)
    names = {s["metadata"]["name"] for s in knative_services(overlay)}
    assert set(LANE_SERVICES) <= names
    lane_documents = [
        m
        for m in [*knative_services(overlay), *triggers(overlay)]
        if m["metadata"]["name"] in LANE_SERVICES
    ]
    assert len(lane_documents) == 2 * len(LANE_SERVICES)
    errors = {
        f"{m['kind']}/{m['metadata']['name']}": validation_errors(m, manifests)
        for m in lane_documents
    }
    assert {name: found for name, found in errors.items() if found} == {}


def pod_selectors(node: object) -> list[dict]:
    """Every label selector of pods in a manifest (NetworkPolicy's podSelector, at any depth;
    PodMonitor's selector)."""
    if isinstance(node, list):
        return [found for item in node for found in pod_selectors(item)]
    if not isinstance(node, dict):
        return []
    return [
        found
        for key, value in node.items()
        for found in (
            [value] if key in {"podSelector", "selector"} and isinstance(value, dict) else []
        )
        + pod_selectors(value)
    ]


@pytest.mark.parametrize("overlay", [*OVERLAYS, ALERTS])
def test_network_policies_and_scraping_treat_each_lanes_pods_as_their_stages(overlay):
    """Knative labels a revision's pods with their Service's name: every NetworkPolicy and the
    PodMonitor must select a bulk lane's pods exactly where they select its stage's."""
    label = "serving.knative.dev/service"
    for manifest in rendered(overlay):
        for selector in pod_selectors(manifest.get("spec", {})):
            for stage in PIPELINE:
                expected = selects(selector, {label: stage.name})
                for lane in Lane:
                    pods = {label: service_name(stage.name, lane)}
                    assert selects(selector, pods) == expected, (manifest["metadata"], lane)
