"""The B2 webhook receiver, over real HTTP, with a recording broker and a real Redis."""

import re
import tempfile
import time
from pathlib import Path

import pytest
import redis
import requests
import requests.certs
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventing.receiver import ca_bundle_with, create_app
from functions.common.config import ReceiverSettings
from functions.common.events import OBJECT_CREATED, USER_ID_EXTENSION
from functions.common.status_store import StatusStore
from scripts.b2_sender import SIGNATURE_HEADER, deliver, object_created, signature
from tests.tls_certificates import CertificateAuthority

SECRET = "s3cret"


def settings_for(sink_url, sink_ca_certs=None, answer_within_s=2.5):
    return ReceiverSettings(
        signing_secrets=(SECRET,),
        sink_url=sink_url,
        user_id_pattern=re.compile(r"^(?P<user_id>[^/]+)/"),
        image_extensions=frozenset({"jpg", "png"}),
        thumbnail_prefix="thumbnails/",
        publish_timeout_s=2,
        answer_within_s=answer_within_s,
        sink_ca_certs=sink_ca_certs,
    )


@pytest.fixture
def store(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    return StatusStore(client)


@pytest.fixture
def broker(event_sink):
    return event_sink(respond=lambda event: ("", 202))


@pytest.fixture
def receiver(serve, broker, store):
    return serve(create_app(settings_for(broker.url), store))


def uploads(count, user="ann"):
    return [object_created("photos", f"{user}/{n}.jpg", 1000 + n) for n in range(count)]


def test_a_forged_signature_is_refused_and_nothing_is_published_or_recorded(
    receiver, broker, store
):
    response = deliver(receiver, uploads(1), secret="forged")
    assert response.status_code == 401
    assert broker.received == []
    assert store.user_status("ann").uploaded == 0


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


def test_the_answer_counts_accepted_and_ignored_events(receiver):
    events = [*uploads(2), object_created("photos", "ann/notes.txt", 1)]
    assert deliver(receiver, events, SECRET).json() == {"accepted": 2, "ignored": 1}


def test_a_thumbnail_written_back_to_the_bucket_is_not_published(receiver, broker):
    events = [object_created("photos", "thumbnails/ann/0.jpg", 10), *uploads(1)]
    assert deliver(receiver, events, SECRET).status_code == 200
    assert [d.event["subject"] for d in broker.received] == ["ann/0.jpg"]


def test_a_malformed_event_is_ignored_and_the_rest_of_its_batch_published(receiver, broker):
    good = uploads(2)
    broken = {name: value for name, value in uploads(3)[2].items() if name != "eventId"}
    response = deliver(receiver, [good[0], broken, good[1]], SECRET)
    assert (response.status_code, response.json()) == (200, {"accepted": 2, "ignored": 1})
    assert {d.event["id"] for d in broker.wait_for(2)} == {e["eventId"] for e in good}


def test_a_malformed_body_is_answered_400(receiver):
    body = b"{not json"
    headers = {SIGNATURE_HEADER: signature(body, SECRET)}
    assert requests.post(receiver, data=body, headers=headers, timeout=5).status_code == 400


def test_an_unreachable_broker_is_answered_503_so_b2_retries(serve, store, refused_port):
    receiver = serve(create_app(settings_for(f"http://127.0.0.1:{refused_port}"), store))
    assert deliver(receiver, uploads(2), SECRET).status_code == 503


def test_a_broker_refusing_an_event_is_answered_502_so_b2_retries(serve, event_sink, store):
    refusing = event_sink(respond=lambda event: ("full", 500))
    receiver = serve(create_app(settings_for(refusing.url), store))
    assert deliver(receiver, uploads(1), SECRET).status_code == 502


def test_an_upload_the_broker_refuses_is_not_recorded_so_it_never_waits_forever(
    serve, event_sink, store
):
    refusing = event_sink(respond=lambda event: ("full", 500))
    receiver = serve(create_app(settings_for(refusing.url), store))
    deliver(receiver, uploads(2), SECRET)
    status = store.user_status("ann")
    assert (status.uploaded, status.thumbnails_pending) == (0, 0)


def test_an_unavailable_status_store_is_answered_503(serve, broker, refused_port):
    dead_redis = redis.Redis(port=refused_port, retry=Retry(NoBackoff(), retries=0))
    receiver = serve(create_app(settings_for(broker.url), StatusStore(dead_redis)))
    assert deliver(receiver, uploads(1), SECRET).status_code == 503


def test_the_upload_is_recorded_at_the_b2_event_time(receiver, store):
    event = {**uploads(1)[0], "eventTimestamp": 1764270000500}
    deliver(receiver, [event], SECRET)
    status = store.user_status("ann")
    assert (status.uploaded, status.timestamps["first_upload_at"]) == (1, 1764270000.5)


def test_a_batch_delivered_twice_is_published_twice_but_recorded_once(receiver, broker, store):
    events = uploads(2)
    assert deliver(receiver, events, SECRET).status_code == 200
    assert deliver(receiver, events, SECRET).status_code == 200
    assert len(broker.wait_for(4)) == 4
    assert store.user_status("ann").uploaded == 2


def test_a_full_batch_is_answered_within_b2s_timeout_even_with_a_slow_broker(
    serve, event_sink, store
):
    def slow(event):
        time.sleep(0.2)
        return "", 202

    receiver = serve(create_app(settings_for(event_sink(respond=slow).url), store))
    started = time.monotonic()
    response = deliver(receiver, uploads(50), SECRET)
    assert response.status_code == 200
    assert time.monotonic() - started < 2.5  # one after the other would take 10 s


def test_a_batch_the_broker_cannot_take_in_time_is_answered_503_so_b2_retries(
    serve, event_sink, store
):
    def stalled(event):
        time.sleep(1.0)
        return "", 202

    settings = settings_for(event_sink(respond=stalled).url, answer_within_s=0.3)
    receiver = serve(create_app(settings, store))
    assert deliver(receiver, uploads(1), SECRET).status_code == 503


def test_health_check_answers_200(receiver):
    assert requests.get(f"{receiver}/healthz", timeout=5).status_code == 200


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
    serve, https_broker, cluster_ca, store
):
    receiver = serve(create_app(settings_for(https_broker.url, cluster_ca.pem), store))
    assert deliver(receiver, uploads(2), SECRET).status_code == 200
    assert len(https_broker.wait_for(2)) == 2


def test_an_https_broker_is_not_trusted_without_k_ca_certs(serve, https_broker, store):
    receiver = serve(create_app(settings_for(https_broker.url), store))
    assert deliver(receiver, uploads(1), SECRET).status_code == 503
    assert https_broker.received == []


def test_an_https_broker_is_not_trusted_when_k_ca_certs_holds_another_ca(
    serve, https_broker, store
):
    other = CertificateAuthority.create("another-ca")
    receiver = serve(create_app(settings_for(https_broker.url, other.pem), store))
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


def test_k_ca_certs_without_a_certificate_stops_the_receiver_at_start(store):
    with pytest.raises(ValueError, match="K_CA_CERTS"):
        create_app(settings_for("https://broker.invalid", "not a certificate"), store)
