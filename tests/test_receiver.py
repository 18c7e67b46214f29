"""The B2 webhook receiver, over real HTTP, with a recording broker and a real Redis."""

import re
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import redis
import requests
import requests.certs
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.b2_sender import SIGNATURE_HEADER, deliver, object_created, signature
from eventing.receiver import ca_bundle_with, create_app
from functions.common.config import ReceiverSettings
from functions.common.events import OBJECT_CREATED, USER_ID_EXTENSION, PhotoRef
from functions.common.photo_store import PhotoStore
from functions.common.seen_events import SeenEvents
from tests.tls_certificates import CertificateAuthority

SECRET = "s3cret"


def settings_for(sink_url, sink_ca_certs=None, answer_within_s=2.5, interactive_backlog=10):
    return ReceiverSettings(
        signing_secrets=(SECRET,),
        sink_url=sink_url,
        user_id_pattern=re.compile(r"^(?P<user_id>[^/]+)/"),
        image_extensions=frozenset({"jpg", "png"}),
        thumbnail_key_template="thumbnails/{key}.jpg",
        publish_timeout_s=2,
        answer_within_s=answer_within_s,
        sink_ca_certs=sink_ca_certs,
        lane_interactive_backlog=interactive_backlog,
    )


@pytest.fixture
def store(redis_client):
    return PhotoStore(redis_client)


@pytest.fixture
def seen(redis_client):
    return SeenEvents(redis_client, window_s=60)


@pytest.fixture
def start(serve, store, seen):
    """Serve a receiver with `settings`, the test's Redis stores unless others are given."""

    def start_receiver(settings, photo_store=None, seen_events=None):
        return serve(create_app(settings, photo_store or store, seen_events or seen))

    return start_receiver


@pytest.fixture
def broker(event_sink):
    return event_sink(respond=lambda event: ("", 202))


@pytest.fixture
def receiver(start, broker):
    return start(settings_for(broker.url))


def uploads(count, user="ann"):
    return [object_created("photos", f"{user}/{n}.jpg", 1000 + n) for n in range(count)]


def test_a_forged_signature_is_refused_and_nothing_is_published_or_recorded(
    receiver, broker, store, reader
):
    response = deliver(receiver, uploads(1), secret="forged")
    assert response.status_code == 401
    assert broker.received == []
    assert reader.user_status("ann").uploaded == 0


def test_each_upload_of_a_batch_is_published_as_a_cloudevent_with_the_b2_event_id(receiver, broker):
    events = uploads(3)
    response = deliver(receiver, events, SECRET)
    assert response.status_code == 200
    published = {delivery.event["id"]: delivery.event for delivery in broker.wait_for(3)}
    assert set(published) == {event["eventId"] for event in events}
    for event in events:
        cloudevent = published[event["eventId"]]
        assert cloudevent["type"] == OBJECT_CREATED
        assert cloudevent["source"] == "b2://photos"
        assert cloudevent["subject"] == event["objectName"]
        assert cloudevent[USER_ID_EXTENSION] == "ann"
        assert cloudevent.data["event_type"] == "b2:ObjectCreated:Upload"


def test_events_are_published_in_binary_mode(receiver, broker):
    event = uploads(1)[0]
    deliver(receiver, [event], SECRET)
    assert broker.wait_for(1)[0].headers["Ce-Id"] == event["eventId"]


def test_the_answer_counts_accepted_duplicate_ignored_and_failed_events(receiver):
    events = [*uploads(2), object_created("photos", "ann/notes.txt", 1)]
    deliver(receiver, events[:1], SECRET)
    answer = deliver(receiver, events, SECRET).json()
    assert answer == {"accepted": 1, "duplicates": 1, "ignored": 1, "failed": 0}


def test_a_thumbnail_written_back_to_the_bucket_is_not_published(receiver, broker):
    events = [object_created("photos", "thumbnails/ann/0.jpg", 10), *uploads(1)]
    assert deliver(receiver, events, SECRET).status_code == 200
    assert [d.event["subject"] for d in broker.received] == ["ann/0.jpg"]


def test_a_malformed_event_is_ignored_and_the_rest_of_its_batch_published(receiver, broker):
    good = uploads(2)
    broken = {name: value for name, value in uploads(3)[2].items() if name != "eventId"}
    response = deliver(receiver, [good[0], broken, good[1]], SECRET)
    answer = response.json()
    assert (response.status_code, answer["accepted"], answer["ignored"]) == (200, 2, 1)
    assert {d.event["id"] for d in broker.wait_for(2)} == {e["eventId"] for e in good}


def test_a_malformed_body_is_answered_400(receiver):
    body = b"{not json"
    headers = {SIGNATURE_HEADER: signature(body, SECRET)}
    assert requests.post(receiver, data=body, headers=headers, timeout=5).status_code == 400


def test_an_unreachable_broker_is_answered_503_so_b2_retries(start, refused_port):
    receiver = start(settings_for(f"http://127.0.0.1:{refused_port}"))
    assert deliver(receiver, uploads(2), SECRET).status_code == 503


def test_a_broker_refusing_an_event_is_answered_502_so_b2_retries(start, event_sink):
    refusing = event_sink(respond=lambda event: ("full", 500))
    receiver = start(settings_for(refusing.url))
    assert deliver(receiver, uploads(1), SECRET).status_code == 502


def test_an_upload_the_broker_refuses_is_not_recorded_so_it_never_waits_forever(
    start, event_sink, store, reader
):
    refusing = event_sink(respond=lambda event: ("full", 500))
    receiver = start(settings_for(refusing.url))
    deliver(receiver, uploads(2), SECRET)
    status = reader.user_status("ann")
    assert (status.uploaded, status.counts["thumbnails_pending"]) == (0, 0)


def test_an_unavailable_status_store_is_answered_503(start, broker, refused_port):
    dead_redis = redis.Redis(port=refused_port, retry=Retry(NoBackoff(), retries=0))
    receiver = start(settings_for(broker.url), PhotoStore(dead_redis))
    assert deliver(receiver, uploads(1), SECRET).status_code == 503


def test_the_upload_is_recorded_at_the_b2_event_time(receiver, store, reader):
    event = {**uploads(1)[0], "eventTimestamp": 1764270000500}
    deliver(receiver, [event], SECRET)
    status = reader.user_status("ann")
    assert (status.uploaded, status.timestamps["first_upload_at"]) == (1, 1764270000.5)


def test_a_batch_delivered_twice_is_published_and_recorded_once(receiver, broker, store, reader):
    events = uploads(2)
    assert deliver(receiver, events, SECRET).status_code == 200
    assert deliver(receiver, events, SECRET).status_code == 200
    assert len(broker.wait_for(2)) == 2
    time.sleep(0.2)  # a republished event would have arrived by now
    assert len(broker.received) == 2
    assert reader.user_status("ann").uploaded == 2


def test_a_full_batch_is_answered_within_b2s_timeout_even_with_a_slow_broker(start, event_sink):
    def slow(event):
        time.sleep(0.2)
        return "", 202

    receiver = start(settings_for(event_sink(respond=slow).url))
    started = time.monotonic()
    response = deliver(receiver, uploads(50), SECRET)
    assert response.status_code == 200
    assert time.monotonic() - started < 2.5  # one after the other would take 10 s


def test_a_batch_the_broker_cannot_take_in_time_is_answered_503_so_b2_retries(start, event_sink):
    def stalled(event):
        time.sleep(1.0)
        return "", 202

    settings = settings_for(event_sink(respond=stalled).url, answer_within_s=0.3)
    receiver = start(settings)
    assert deliver(receiver, uploads(1), SECRET).status_code == 503


def test_health_check_answers_200(receiver):
    assert requests.get(f"{receiver}/healthz", timeout=5).status_code == 200


# -- keys as users name files -----------------------------------------------------------------

# Distinct photos, each named as a user would: Japanese, emoji and a space, NFD and NFC accents,
# `%` and `+`, and a key of exactly 1024 bytes of UTF-8 (B2's limit).
USER_KEYS = [
    "ann/写真.jpg",
    "ann/🎉 party.jpg",
    "ann/Cafe\u0301.jpg",
    "ann/Caf\u00e9.jpg",
    "ann/100% real+fun.jpg",
    "ann/" + "写" * 338 + "ab.jpg",
]


def counted(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0


def test_keys_as_users_name_files_are_each_published_with_a_header_safe_subject_and_exact_key(
    receiver, broker, store, reader
):
    assert len(USER_KEYS[-1].encode()) == 1024
    events = [object_created("photos", key, 10) for key in USER_KEYS]
    response = deliver(receiver, events, SECRET)
    assert (response.status_code, response.json()["accepted"]) == (200, len(USER_KEYS))
    by_key = {d.event.data["key"]: d for d in broker.wait_for(len(USER_KEYS))}
    assert set(by_key) == set(USER_KEYS)
    for key, delivery in by_key.items():
        assert delivery.headers["Ce-Subject"] == delivery.event["subject"]
        assert delivery.event["subject"].isascii()
        assert unquote(delivery.event["subject"]) == key
    assert reader.user_status("ann").uploaded == len(USER_KEYS)


@pytest.mark.parametrize(
    ("key", "reason"),
    [("ann/../bob/a.jpg", "dot_segment"), ("a.jpg", "outside_layout")],
)
def test_a_key_that_cannot_be_our_photo_is_ignored_answered_200_and_counted(
    receiver, broker, key, reason
):
    before = counted("receiver_events_ignored_total", reason=reason)
    response = deliver(receiver, [object_created("photos", key, 10), *uploads(1)], SECRET)
    assert (response.status_code, response.json()["ignored"]) == (200, 1)
    assert [d.event.data["key"] for d in broker.wait_for(1)] == ["ann/0.jpg"]
    assert counted("receiver_events_ignored_total", reason=reason) == before + 1


class FailingFor(PhotoStore):
    """The status store, with a bug when it records one photo."""

    def __init__(self, client, key):
        super().__init__(client)
        self._key = key

    def record(self, user_id, photo_id, stage, **fields):
        if photo_id.startswith(self._key + "@"):
            raise RuntimeError("a bug")
        return super().record(user_id, photo_id, stage, **fields)


def test_one_upload_failing_unexpectedly_leaves_the_others_accepted_and_answers_200(
    start, broker, redis_client, store, caplog, reader
):
    # Its own user: an earlier test's publish, answered late, may still record ann's uploads.
    receiver = start(settings_for(broker.url), FailingFor(redis_client, "eve/1.jpg"))
    before = counted("receiver_events_failed_total", kind="unexpected")
    response = deliver(receiver, uploads(3, user="eve"), SECRET)
    assert (response.status_code, response.json()) == (
        200,
        {"accepted": 2, "duplicates": 0, "ignored": 0, "failed": 1},
    )
    assert reader.user_status("eve").uploaded == 2
    assert counted("receiver_events_failed_total", kind="unexpected") == before + 1
    [logged] = [r for r in caplog.records if r.levelname == "ERROR" and "eve/1.jpg" in r.message]
    assert logged.exc_info[0] is RuntimeError


def test_an_unexpected_failure_beside_a_transient_one_still_answers_5xx_so_b2_retries(
    start, event_sink, redis_client
):
    refusing = event_sink(lambda event: ("full", 500) if "0" in event.data["key"] else ("", 202))
    receiver = start(settings_for(refusing.url), FailingFor(redis_client, "ann/1.jpg"))
    response = deliver(receiver, uploads(2), SECRET)
    assert (response.status_code, response.json()["failed"]) == (502, 2)


# -- B2 redelivers: an eventId is published once within the window -----------------------------


def test_each_published_upload_is_counted_as_accepted(receiver, broker):
    before = counted("receiver_events_accepted_total", lane="interactive")
    assert deliver(receiver, uploads(3), SECRET).json()["accepted"] == 3
    assert counted("receiver_events_accepted_total", lane="interactive") == before + 3


# -- Lanes: a user's backlog decides, each upload in turn ---------------------------------------


def test_uploads_of_a_user_with_a_small_backlog_are_published_in_the_interactive_lane(
    start, broker
):
    receiver = start(settings_for(broker.url, interactive_backlog=5))
    deliver(receiver, uploads(3, user="liv"), SECRET)
    assert {delivery.event["lane"] for delivery in broker.wait_for(3)} == {"interactive"}


def test_uploads_once_the_users_backlog_reaches_the_threshold_are_published_in_the_bulk_lane(
    start, broker
):
    receiver = start(settings_for(broker.url, interactive_backlog=2))
    for n in range(4):  # one at a time, as B2 sends them: each sees the backlog before it
        deliver(receiver, [object_created("photos", f"max/{n}.jpg", 1000 + n)], SECRET)
    lanes = {d.event.data["key"]: d.event["lane"] for d in broker.wait_for(4)}
    assert lanes == {
        "max/0.jpg": "interactive",
        "max/1.jpg": "interactive",
        "max/2.jpg": "bulk",
        "max/3.jpg": "bulk",
    }


def test_a_user_in_the_bulk_lane_stays_there_until_nothing_of_theirs_waits(start, broker, store):
    receiver = start(settings_for(broker.url, interactive_backlog=2))

    def upload(n):
        deliver(receiver, [object_created("photos", f"kim/{n}.jpg", 1000 + n)], SECRET)
        event = broker.wait_for(n + 1)[n].event
        return PhotoRef.from_data(event.data).photo_id, event["lane"]

    def finish(photo_id):
        store.record("kim", photo_id, "thumbnail_failed")

    first, second, third = (upload(n) for n in range(3))
    assert [lane for _, lane in (first, second, third)] == ["interactive", "interactive", "bulk"]
    finish(first[0])  # two still wait, under the threshold
    fourth = upload(3)
    assert fourth[1] == "bulk"
    for photo_id, _ in (second, third, fourth):
        finish(photo_id)
    assert upload(4)[1] == "interactive"


def test_one_users_backlog_does_not_move_another_user_to_the_bulk_lane(start, broker):
    receiver = start(settings_for(broker.url, interactive_backlog=2))
    for event in uploads(3, user="big"):
        deliver(receiver, [event], SECRET)
    deliver(receiver, uploads(1, user="small"), SECRET)
    lanes = [(d.event.data["user_id"], d.event["lane"]) for d in broker.wait_for(4)]
    assert lanes[2:] == [("big", "bulk"), ("small", "interactive")]


def test_the_same_event_id_delivered_in_two_requests_is_published_once(receiver, broker):
    event = uploads(1)[0]
    before = counted("receiver_events_duplicate_total")
    assert deliver(receiver, [event], SECRET).json()["accepted"] == 1
    again = deliver(receiver, [event], SECRET)
    assert (again.status_code, again.json()["duplicates"]) == (200, 1)
    time.sleep(0.2)  # a republished event would have arrived by now
    assert [d.event["id"] for d in broker.received] == [event["eventId"]]
    assert counted("receiver_events_duplicate_total") == before + 1


def test_an_event_whose_publish_failed_is_not_remembered_and_its_redelivery_is_published(
    start, event_sink, store, reader
):
    answers = iter([("full", 500), ("", 202)])
    broker = event_sink(respond=lambda event: next(answers))
    receiver = start(settings_for(broker.url))
    event = uploads(1)[0]
    assert deliver(receiver, [event], SECRET).status_code == 502
    redelivered = deliver(receiver, [event], SECRET)
    assert (redelivered.status_code, redelivered.json()["accepted"]) == (200, 1)
    assert [d.event["id"] for d in broker.wait_for(2)] == [event["eventId"]] * 2
    assert reader.user_status("ann").uploaded == 1


def test_an_event_id_is_published_again_once_the_window_has_passed(start, broker, redis_client):
    receiver = start(settings_for(broker.url), seen_events=SeenEvents(redis_client, 0.2))
    event = uploads(1)[0]
    deliver(receiver, [event], SECRET)
    time.sleep(0.3)
    assert deliver(receiver, [event], SECRET).json()["accepted"] == 1
    assert len(broker.wait_for(2)) == 2


def test_an_event_is_remembered_for_the_configured_window(receiver, redis_client):
    event = uploads(1)[0]
    deliver(receiver, [event], SECRET)
    assert 59_000 < redis_client.pttl(f"b2event:{event['eventId']}") <= 60_000


def test_an_unavailable_seen_events_store_is_answered_503_and_publishes_nothing(
    start, broker, refused_port
):
    dead_redis = redis.Redis(port=refused_port, retry=Retry(NoBackoff(), retries=0))
    receiver = start(settings_for(broker.url), seen_events=SeenEvents(dead_redis, 60))
    assert deliver(receiver, uploads(1), SECRET).status_code == 503
    assert broker.received == []


def test_the_window_defaults_to_a_day_and_is_read_from_the_environment(monkeypatch):
    assert ReceiverSettings.from_env().dedup_window_s == 86400
    monkeypatch.setenv("WEBHOOK_DEDUP_WINDOW_S", "600")
    assert ReceiverSettings.from_env().dedup_window_s == 600


def test_a_window_of_zero_is_refused_at_load(monkeypatch):
    monkeypatch.setenv("WEBHOOK_DEDUP_WINDOW_S", "0")
    with pytest.raises(ValueError, match="WEBHOOK_DEDUP_WINDOW_S"):
        ReceiverSettings.from_env()


# -- Knative transport encryption: an HTTPS broker signed by the cluster's CA ----------------


@pytest.fixture(autouse=True)
def private_tmpdir(monkeypatch, tmp_path):
    """The receiver writes its CA bundle under TMPDIR: here, this test's own folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def cluster_ca():
    return CertificateAuthority.create("knative-eventing-selfsigned-ca")


@pytest.fixture
def https_broker(event_sink, cluster_ca, tmp_path):
    """The broker's ingress as `transport-encryption: strict` serves it: HTTPS only, with a
    certificate issued by the cluster's own CA."""
    return event_sink(lambda event: ("", 202), cluster_ca.server_context(tmp_path))


def test_an_https_broker_is_published_to_when_k_ca_certs_holds_its_ca(
    start, https_broker, cluster_ca
):
    receiver = start(settings_for(https_broker.url, cluster_ca.pem))
    assert deliver(receiver, uploads(2), SECRET).status_code == 200
    assert len(https_broker.wait_for(2)) == 2


def test_an_https_broker_is_not_trusted_without_k_ca_certs(start, https_broker):
    receiver = start(settings_for(https_broker.url))
    assert deliver(receiver, uploads(1), SECRET).status_code == 503
    assert https_broker.received == []


def test_an_https_broker_is_not_trusted_when_k_ca_certs_holds_another_ca(start, https_broker):
    other = CertificateAuthority.create("another-ca")
    receiver = start(settings_for(https_broker.url, other.pem))
    assert deliver(receiver, uploads(1), SECRET).status_code == 503
    assert https_broker.received == []


def test_the_receiver_reads_k_ca_certs_from_its_environment(monkeypatch, cluster_ca):
    monkeypatch.setenv("K_CA_CERTS", cluster_ca.pem)
    assert ReceiverSettings.from_env().sink_ca_certs == cluster_ca.pem


def test_the_ca_bundle_is_written_under_tmpdir_with_the_default_cas_and_k_ca_certs(
    cluster_ca, private_tmpdir
):
    path = ca_bundle_with(cluster_ca.pem)
    assert path.parent == private_tmpdir
    bundle = path.read_text()
    assert bundle.startswith(Path(requests.certs.where()).read_text())
    assert bundle.rstrip().endswith(cluster_ca.pem.strip())


def test_k_ca_certs_without_a_certificate_stops_the_receiver_at_start(store, seen):
    with pytest.raises(ValueError, match="K_CA_CERTS"):
        create_app(settings_for("https://broker.invalid", "not a certificate"), store, seen)


# Eventing's sender authentication (OIDC): the broker's ingress wants the mounted token


def test_the_mounted_oidc_token_is_sent_to_the_broker_as_a_bearer_token(start, broker, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    receiver = start(settings_for(broker.url).replace(sink_token_file=token))
    deliver(receiver, uploads(1), SECRET)
    token.write_text("rotated-token\n")  # the kubelet rotates it in place
    deliver(receiver, uploads(1), SECRET)
    sent = [received.headers.get("Authorization") for received in broker.wait_for(2)]
    assert sent == ["Bearer first-token", "Bearer rotated-token"]


def test_no_authorization_is_sent_where_no_token_is_mounted(start, broker, tmp_path):
    receiver = start(settings_for(broker.url).replace(sink_token_file=tmp_path / "absent"))
    deliver(receiver, uploads(1), SECRET)
    assert "Authorization" not in broker.wait_for(1)[0].headers
