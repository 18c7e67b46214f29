"""The local broker routes, retries and dead-letters as Knative's Broker does, by triggers.yaml."""

import base64
import itertools
import time
from pathlib import Path

import pytest
import requests
import yaml

from devstack.local_broker import LocalBroker, parse_duration, parse_filter
from devstack.stack import STAGE_SERVICES
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.lanes import Lane
from functions.common.pipeline import PIPELINE

THUMBNAIL_CREATED = PIPELINE["thumbnail"].created

TRIGGERS = Path(__file__).resolve().parent.parent / "eventing" / "triggers.yaml"
# The Knative Services the Triggers name: each stage's per lane, and the dead-letter sink.
SERVICES = (*STAGE_SERVICES, "status-dead-letter")


def event(event_type, key="ann/a.jpg", lane=Lane.INTERACTIVE):
    photo = PhotoRef(bucket="photos", key=key, version_id="v1", user_id="ann")
    return new_event(event_type, "/test", photo, photo_data(photo), lane=lane)


def reply_with(event_type):
    def respond(received):
        headers, body = binary_http(event(event_type, received["subject"]))
        return body, 200, headers

    return respond


def answers(*statuses):
    """Answer each delivery with the next status; the last one repeats."""
    remaining = list(statuses)

    def respond(received):
        return "answer", remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return respond


def fast_triggers(tmp_path, **delivery):
    """triggers.yaml with its delivery changed, so retry tests need not wait seconds."""
    manifests = list(yaml.safe_load_all(TRIGGERS.read_text()))
    for manifest in manifests:
        manifest["spec"]["delivery"].update(delivery)
    path = tmp_path / "triggers.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    return path


@pytest.fixture
def start_broker(event_sink, refused_port):
    """Start a LocalBroker over `triggers`, each Knative Service a recording sink answering
    as `respond[name]` says, or a port nobody listens on for the names in `unreachable`."""
    brokers = []

    def start(triggers=TRIGGERS, unreachable=(), **respond):
        sinks = {name: event_sink(respond.get(name)) for name in SERVICES}
        urls = {name: sink.url for name, sink in sinks.items()}
        urls |= {name: f"http://127.0.0.1:{refused_port}" for name in unreachable}
        broker = LocalBroker.from_manifests([triggers], urls)
        broker.url = broker.start()
        brokers.append(broker)
        return broker, sinks

    yield start
    for broker in brokers:
        broker.stop()


def publish(broker, cloudevent):
    headers, body = binary_http(cloudevent)
    response = requests.post(broker.url, headers=headers, data=body, timeout=5)
    assert response.status_code == 202


def received_by(sinks):
    """How many events each Service received, those that received any."""
    return {name: len(sink.received) for name, sink in sinks.items() if sink.received}


def test_an_upload_event_goes_to_thumbnail_only(start_broker):
    broker, sinks = start_broker()
    publish(broker, event(OBJECT_CREATED))
    assert broker.wait_idle(5)
    assert received_by(sinks) == {"thumbnail": 1}


def test_a_thumbnail_event_goes_to_embed_only(start_broker):
    broker, sinks = start_broker()
    publish(broker, event(THUMBNAIL_CREATED))
    assert broker.wait_idle(5)
    assert received_by(sinks) == {"embed": 1}


def test_an_event_no_trigger_matches_is_accepted_and_dropped(start_broker):
    broker, sinks = start_broker()
    publish(broker, event("something.else"))
    assert broker.wait_idle(5)
    assert broker.stats()["received"] == 1
    assert all(not sink.received for sink in sinks.values())


def test_an_event_is_delivered_with_its_attributes_in_binary_mode(start_broker):
    broker, sinks = start_broker()
    sent = event(OBJECT_CREATED)
    publish(broker, sent)
    delivery = sinks["thumbnail"].wait_for(1)[0]
    assert delivery.headers["Ce-Id"] == sent["id"]
    assert (delivery.event["subject"], delivery.event["userid"]) == ("ann/a.jpg", "ann")
    assert delivery.event.data == sent.data


def test_a_reply_event_is_routed_onward(start_broker):
    broker, sinks = start_broker(thumbnail=reply_with(THUMBNAIL_CREATED))
    publish(broker, event(OBJECT_CREATED))
    assert sinks["embed"].wait_for(1)[0].event["type"] == THUMBNAIL_CREATED


def test_a_structured_mode_event_is_accepted(start_broker):
    broker, sinks = start_broker()
    body = (
        '{"specversion": "1.0", "id": "1", "source": "/test", "type": "thumbnail.created",'
        ' "datacontenttype": "application/json", "data": {"key": "ann/a.jpg"}}'
    )
    headers = {"Content-Type": "application/cloudevents+json"}
    assert requests.post(broker.url, data=body, headers=headers, timeout=5).status_code == 202
    assert sinks["embed"].wait_for(1)[0].event.data == {"key": "ann/a.jpg"}


def test_a_request_that_is_not_a_cloudevent_is_answered_400(start_broker):
    broker, _ = start_broker()
    response = requests.post(broker.url, json={"hello": "world"}, timeout=5)
    assert response.status_code == 400


def test_a_503_is_retried_until_the_subscriber_succeeds(start_broker):
    broker, sinks = start_broker(thumbnail=answers(503, 200))
    publish(broker, event(OBJECT_CREATED))
    assert broker.wait_idle(5)
    assert len(sinks["thumbnail"].received) == 2
    assert sinks["status-dead-letter"].received == []
    assert broker.stats()["triggers"]["thumbnail"]["retried"] == 1


def test_a_400_is_not_retried_and_goes_straight_to_the_dead_letter_sink(start_broker):
    broker, sinks = start_broker(thumbnail=answers(400))
    publish(broker, event(OBJECT_CREATED))
    dead_letter = sinks["status-dead-letter"].wait_for(1)[0]
    assert dead_letter.path == "/v1/dead-letter"
    assert dead_letter.event["knativeerrorcode"] == "400"
    assert len(sinks["thumbnail"].received) == 1


def test_when_retries_run_out_the_event_is_dead_lettered_with_knative_error_attributes(
    start_broker, tmp_path
):
    triggers = fast_triggers(tmp_path, retry=2, backoffDelay="PT0.01S")
    broker, sinks = start_broker(triggers, thumbnail=answers(503))
    sent = event(OBJECT_CREATED)
    publish(broker, sent)
    dead_letter = sinks["status-dead-letter"].wait_for(1)[0].event
    assert len(sinks["thumbnail"].received) == 3
    assert (dead_letter["id"], dead_letter["type"]) == (sent["id"], OBJECT_CREATED)
    assert dead_letter["knativeerrorcode"] == "503"
    assert dead_letter["knativeerrordest"] == sinks["thumbnail"].url
    assert base64.b64decode(dead_letter["knativeerrordata"]) == b"answer"


def test_an_unreachable_subscriber_is_dead_lettered_as_a_500(start_broker, tmp_path):
    triggers = fast_triggers(tmp_path, retry=1, backoffDelay="PT0.01S")
    broker, sinks = start_broker(triggers, unreachable=["thumbnail"])
    publish(broker, event(OBJECT_CREATED))
    assert sinks["status-dead-letter"].wait_for(1)[0].event["knativeerrorcode"] == "500"


@pytest.mark.parametrize(
    ("policy", "expected_gaps"), [("exponential", [0.2, 0.4, 0.8]), ("linear", [0.0, 0.2, 0.4])]
)
def test_retries_wait_as_the_backoff_policy_says(start_broker, tmp_path, policy, expected_gaps):
    triggers = fast_triggers(tmp_path, retry=3, backoffPolicy=policy, backoffDelay="PT0.2S")
    broker, sinks = start_broker(triggers, thumbnail=answers(503))
    publish(broker, event(OBJECT_CREATED))
    attempts = [delivery.at for delivery in sinks["thumbnail"].wait_for(4)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, expected in zip(gaps, expected_gaps, strict=True):
        assert expected <= gap < expected + 0.3


def test_a_slow_subscriber_does_not_hold_up_other_events(start_broker):
    def slow_for_one(received):
        if received["subject"] == "ann/slow.jpg":
            time.sleep(1.5)
        return "", 200

    broker, sinks = start_broker(thumbnail=slow_for_one)
    publish(broker, event(OBJECT_CREATED, "ann/slow.jpg"))
    publish(broker, event(OBJECT_CREATED, "ann/fast.jpg"))
    started = time.monotonic()
    deliveries = sinks["thumbnail"].wait_for(2)
    assert {d.event["subject"] for d in deliveries} == {"ann/slow.jpg", "ann/fast.jpg"}
    assert time.monotonic() - started < 1.0


def test_an_event_backing_off_does_not_hold_up_other_events(start_broker):
    failed = []

    def fail_first_attempt_of_retried(received):
        if received["subject"] == "ann/retried.jpg" and not failed:
            failed.append(received)
            return "", 503
        return "", 200

    broker, sinks = start_broker(thumbnail=fail_first_attempt_of_retried)
    publish(broker, event(OBJECT_CREATED, "ann/retried.jpg"))
    publish(broker, event(OBJECT_CREATED, "ann/other.jpg"))
    deliveries = sinks["thumbnail"].wait_for(3)
    # The retry comes after the 1 s backoff; "other" was delivered during it.
    assert deliveries[-1].event["subject"] == "ann/retried.jpg"


def test_stats_report_deliveries_per_trigger_and_nothing_in_flight_when_quiet(start_broker):
    broker, _ = start_broker(thumbnail=reply_with(THUMBNAIL_CREATED))
    publish(broker, event(OBJECT_CREATED))
    assert broker.wait_idle(5)
    stats = requests.get(f"{broker.url}/stats", timeout=5).json()
    assert stats["received"] == 2
    assert stats["triggers"]["thumbnail"]["delivered"] == 1
    assert stats["triggers"]["embed"]["delivered"] == 1
    assert stats["triggers"]["embed"]["delivered_by_user"] == {"ann": 1}
    assert stats["in_flight"] == 0


def test_deliveries_are_counted_per_user_by_their_exact_id(start_broker):
    broker, _ = start_broker()
    photo = PhotoRef(bucket="photos", key="ユーザー/a.jpg", version_id="v1", user_id="ユーザー")
    publish(broker, new_event(OBJECT_CREATED, "/test", photo, photo_data(photo)))
    assert broker.wait_idle(5)
    delivered = requests.get(f"{broker.url}/stats", timeout=5).json()["triggers"]["thumbnail"]
    assert delivered["delivered_by_user"] == {"ユーザー": 1}


def test_a_bulk_photo_goes_to_the_bulk_services_and_its_reply_stays_in_the_bulk_lane(
    start_broker,
):
    def reply_in_bulk(received):
        headers, body = binary_http(event(THUMBNAIL_CREATED, received["subject"], Lane.BULK))
        return body, 200, headers

    broker, sinks = start_broker(**{"thumbnail-bulk": reply_in_bulk})
    publish(broker, event(OBJECT_CREATED, "ann/big.jpg", Lane.BULK))
    assert broker.wait_idle(5)
    assert received_by(sinks) == {"thumbnail-bulk": 1, "embed-bulk": 1}


def test_health_check_answers_200(start_broker):
    broker, _ = start_broker()
    assert requests.get(f"{broker.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT0.5S", 0.5), ("PT60S", 60), ("PT1M30S", 90), ("P1DT1H", 90000)]
)
def test_iso_8601_durations_are_read_in_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "0.5S", "PT0.5"])
def test_a_malformed_duration_is_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# -- Knative's new trigger filters (spec.filters) ------------------------------------------------


def test_an_exact_filter_matches_only_events_that_have_the_attribute_with_that_value():
    matches = parse_filter({"exact": {"lane": "bulk"}})
    assert matches(event(OBJECT_CREATED, lane=Lane.BULK))
    assert not matches(event(OBJECT_CREATED, lane=Lane.INTERACTIVE))


@pytest.mark.parametrize("dialect", ["exact", "prefix", "suffix"])
def test_an_attribute_filter_naming_two_attributes_is_refused_as_knative_refuses_it(dialect):
    with pytest.raises(ValueError, match="exactly one attribute"):
        parse_filter({dialect: {"type": OBJECT_CREATED, "lane": "bulk"}})


def test_not_exact_matches_an_event_that_lacks_the_attribute():
    lane_less = event(OBJECT_CREATED)
    del lane_less["lane"]
    assert parse_filter({"not": {"exact": {"lane": "bulk"}}})(lane_less)


def test_prefix_and_suffix_never_match_an_absent_attribute():
    for dialect in ("prefix", "suffix"):
        assert not parse_filter({dialect: {"nosuchattribute": ""}})(event(OBJECT_CREATED))


def test_all_needs_every_expression_and_any_needs_one():
    created = event(OBJECT_CREATED)
    yes, no = {"prefix": {"type": "com.backblaze."}}, {"suffix": {"type": ".deleted"}}
    assert parse_filter({"any": [yes, no]})(created)
    assert not parse_filter({"all": [yes, no]})(created)


def test_a_filter_dialect_the_local_broker_cannot_evaluate_is_refused():
    with pytest.raises(ValueError, match="cesql"):
        parse_filter({"cesql": "type = 'x'"})
