"""Tracing: one trace per webhook runs from the receiver through the broker, thumbnail and embed.

The W3C trace context travels inside the CloudEvents (the distributed-tracing extension) and,
hop by hop, in the HTTP `traceparent` header, as Knative's broker sends it. The stack test runs
every process with the real OTLP/HTTP exporter against `devstack/otlp_receiver.py`, which
decodes the real OTLP protobuf; the HTTP, Redis and AWS SDK spans are the OpenTelemetry
instrumentations' own (Flask, requests, redis, botocore), with their default (old) semantic
conventions: `http.method`, `http.route`, `http.status_code`, `db.system`, `rpc.*`.
"""

import json
import os
import time
from pathlib import Path

import pytest
import requests
from flask import Flask
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from devstack import otlp_receiver
from devstack.local_broker import LocalBroker
from devstack.make_test_model_pack import build_pack
from devstack.sample_photos import sample_photo
from devstack.stack import STAGE_SERVICES, LocalStack, StackConfig
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.telemetry import (
    add_trace_context,
    configure_tracing,
    event_context,
    instrument_app,
    tracer,
)
from tests.stack_fixtures import deliver, upload, wait_until_idle

TRIGGERS = Path(__file__).resolve().parent.parent / "eventing" / "triggers.yaml"
PHOTO_KEY = "tess/photos/traced.jpg"
SENDER = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01"
HOP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# Every step the issue names, by the service whose span it is ("POST /": the HTTP server span).
STEP_SPANS = {
    "receiver": {"POST /", "verify", "status.write", "publish"},
    "thumbnail": {"POST /", "thumbnail", "download", "resize", "upload", "lambda", "status.write"},
    "embed": {
        *("POST /", "embed", "download", "decode", "detect", "recognise", "lambda"),
        "status.write",
    },
    "broker": {"trigger thumbnail", "trigger embed"},
}


def photo_event(traceparent=None):
    photo = PhotoRef(bucket="photos", key="ann/a.jpg", version_id="v1", user_id="ann")
    event = new_event(OBJECT_CREATED, "/test", photo, photo_data(photo))
    if traceparent:
        event["traceparent"] = traceparent
    return event


def traceparent_of(span):
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def span_id_in(context):
    return trace.get_current_span(context).get_span_context().span_id


def test_tracing_is_a_no_op_without_otel_variables(monkeypatch):
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    assert configure_tracing("thumbnail") is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with tracer("test").start_as_current_span("step") as span:
        assert not span.is_recording()
    app = Flask("untraced")
    assert "wsgi_app" not in vars(instrument_app(app))  # not wrapped
    assert not RequestsInstrumentor().is_instrumented_by_opentelemetry


def test_an_event_produced_in_a_span_carries_it_in_its_traceparent_extension():
    with TracerProvider().get_tracer("test").start_as_current_span("stage") as span:
        event = add_trace_context(photo_event())
    assert event["traceparent"] == traceparent_of(span)


def test_an_event_produced_outside_any_span_gets_no_trace_context():
    assert "traceparent" not in add_trace_context(photo_event()).get_attributes()


def test_a_handler_continues_the_traceparent_header_of_the_last_hop():
    context = event_context(photo_event(SENDER), {"traceparent": HOP})
    assert span_id_in(context) == int(HOP.split("-")[2], 16)


def test_inside_the_requests_server_span_a_handler_continues_that_span():
    with TracerProvider().get_tracer("test").start_as_current_span("POST /") as server:
        context = event_context(photo_event(SENDER), {"traceparent": HOP})
    assert span_id_in(context) == server.get_span_context().span_id


def test_without_a_traceparent_header_a_handler_continues_the_events_extension():
    context = event_context(photo_event(SENDER), {"content-type": "application/json"})
    assert span_id_in(context) == int(SENDER.split("-")[2], 16)


@pytest.fixture
def local_broker(event_sink):
    """A LocalBroker whose thumbnail subscriber replies with a `thumbnail.created` carrying
    the HOP trace context, and whose embed subscriber records what it gets."""

    def reply(received):
        photo = PhotoRef.from_data(received.data)
        created = new_event("thumbnail.created", "/test", photo, photo_data(photo))
        created["traceparent"] = HOP
        headers, body = binary_http(created)
        return body, 200, headers

    sinks = {name: event_sink() for name in (*STAGE_SERVICES, "status-dead-letter")}
    sinks["thumbnail"] = event_sink(reply)
    broker = LocalBroker.from_manifests([TRIGGERS], {name: s.url for name, s in sinks.items()})
    url = broker.start()
    yield url, sinks
    broker.stop()


def test_the_local_broker_delivers_the_traceparent_extension_unchanged(local_broker):
    url, sinks = local_broker
    headers, body = binary_http(photo_event(SENDER))
    assert requests.post(url, headers=headers, data=body, timeout=5).status_code == 202
    delivery = sinks["thumbnail"].wait_for(1)[0]
    assert delivery.event["traceparent"] == SENDER
    # Untraced here, the broker passes the same context on as the hop's header too.
    assert delivery.headers["Traceparent"] == SENDER


def test_the_local_broker_routes_a_replys_traceparent_extension_unchanged(local_broker):
    url, sinks = local_broker
    headers, body = binary_http(photo_event(SENDER))
    requests.post(url, headers=headers, data=body, timeout=5)
    assert sinks["embed"].wait_for(1)[0].event["traceparent"] == HOP


@pytest.mark.parametrize("compression", list(Compression))
def test_the_otlp_stand_in_decodes_what_the_sdk_exporter_sends(serve, compression):
    url = serve(otlp_receiver.create_app())
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression)
    provider = TracerProvider(resource=Resource.create({"service.name": "thumbnail"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    test_tracer = provider.get_tracer("test")
    with (
        test_tracer.start_as_current_span("thumbnail", attributes={"photo.key": "a.jpg"}) as root,
        test_tracer.start_as_current_span("resize") as child,
    ):
        pass
    provider.shutdown()
    spans = {span["name"]: span for span in requests.get(f"{url}/spans", timeout=5).json()}
    assert spans["resize"]["parent_span_id"] == f"{root.get_span_context().span_id:016x}"
    assert spans["resize"]["span_id"] == f"{child.get_span_context().span_id:016x}"
    assert spans["resize"]["trace_id"] == f"{root.get_span_context().trace_id:032x}"
    assert spans["thumbnail"]["parent_span_id"] == ""
    assert spans["thumbnail"]["attributes"] == {"photo.key": "a.jpg"}
    assert spans["thumbnail"]["service"] == "thumbnail"


def test_the_otlp_stand_in_answers_400_to_a_body_that_is_not_otlp(serve):
    url = serve(otlp_receiver.create_app())
    headers = {"Content-Type": otlp_receiver.PROTOBUF}
    response = requests.post(f"{url}/v1/traces", data=b"\xff\xff", headers=headers, timeout=5)
    assert response.status_code == 400


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory):
    """A stack of its own with tracing on, after one signed webhook with one photo."""
    models = tmp_path_factory.mktemp("traced-models")
    build_pack(models / "buffalo_l")
    config = StackConfig(
        model_root=models, workdir=tmp_path_factory.mktemp("traced-stack"), tracing=True
    )
    with LocalStack(config) as stack:
        response = deliver(stack, [upload(stack, PHOTO_KEY, sample_photo(seed=7, faces=1))])
        assert response.status_code == 200, response.text
        wait_until_idle(stack, "tess", 1)
        stack.wait_until_quiet()
        yield stack


@pytest.fixture(scope="module")
def photo_trace(traced_stack):
    """The spans of the trace that published PHOTO_KEY, once every expected one arrived."""
    url = f"{traced_stack.urls['otlp']}/spans"
    deadline = time.monotonic() + 15
    while True:
        spans = requests.get(url, timeout=5).json()
        publish = [s for s in spans if s["attributes"].get("photo.key") == PHOTO_KEY]
        trace_ids = {s["trace_id"] for s in publish if s["name"] == "publish"}
        in_trace = [s for s in spans if s["trace_id"] in trace_ids]
        if _names_by_service(in_trace).items() >= STEP_SPANS.items():
            return in_trace
        if time.monotonic() > deadline:
            return in_trace  # the tests say what is missing
        time.sleep(0.2)


def _names_by_service(spans):
    names = {}
    for span in spans:
        names.setdefault(span["service"], set()).add(span["name"])
    return names


def test_one_trace_runs_from_the_receiver_through_thumbnail_and_embed(photo_trace):
    assert len({span["trace_id"] for span in photo_trace}) == 1
    assert {"receiver", "broker", "thumbnail", "embed"} <= {s["service"] for s in photo_trace}


def test_the_trace_has_a_span_for_every_step(photo_trace):
    names = _names_by_service(photo_trace)
    for service, expected in STEP_SPANS.items():
        assert expected <= names.get(service, set()), service


def spans_named(spans, service, name):
    return [span for span in spans if (span["service"], span["name"]) == (service, name)]


def lineage(span, spans):
    """(service, name) of `span` and of each of its ancestors, nearest first."""
    by_id = {s["span_id"]: s for s in spans}
    chain = []
    while span is not None:
        chain.append((span["service"], span["name"]))
        span = by_id.get(span["parent_span_id"])
    return chain


def test_every_span_of_the_trace_descends_from_the_receivers_http_server_span(photo_trace):
    by_id = {span["span_id"]: span for span in photo_trace}
    roots = [span for span in photo_trace if span["parent_span_id"] not in by_id]
    assert [(root["service"], root["name"], root["kind"]) for root in roots] == [
        ("receiver", "POST /", "server")
    ]


def test_each_stages_http_span_continues_the_brokers_delivery_to_it(photo_trace):
    for stage in ("thumbnail", "embed"):
        [span] = spans_named(photo_trace, stage, stage)
        assert lineage(span, photo_trace)[:4] == [
            (stage, stage),
            (stage, "POST /"),
            ("broker", "POST"),
            ("broker", f"trigger {stage}"),
        ]


@pytest.mark.parametrize("service", ["receiver", "thumbnail", "embed"])
def test_the_http_server_span_carries_the_standard_http_attributes(photo_trace, service):
    [span] = spans_named(photo_trace, service, "POST /")
    assert span["kind"] == "server"
    attributes = span["attributes"]
    assert (attributes["http.method"], attributes["http.route"]) == ("POST", "/")
    assert attributes["http.status_code"] == 200


def test_the_receivers_publish_is_an_http_client_span_to_the_broker(photo_trace):
    [post] = spans_named(photo_trace, "receiver", "POST")
    assert lineage(post, photo_trace)[1] == ("receiver", "publish")
    assert (post["kind"], post["attributes"]["http.method"]) == ("client", "POST")
    assert post["attributes"]["http.status_code"] == 202


@pytest.mark.parametrize("service", ["receiver", "thumbnail", "embed"])
def test_status_writes_are_redis_client_spans(photo_trace, service):
    [write] = spans_named(photo_trace, service, "status.write")
    redis_calls = [span for span in photo_trace if span["parent_span_id"] == write["span_id"]]
    assert redis_calls
    for call in redis_calls:
        assert (call["kind"], call["attributes"]["db.system"]) == ("client", "redis")


@pytest.mark.parametrize(
    ("service", "step", "operation"),
    [
        ("thumbnail", "download", "GetObject"),
        ("thumbnail", "upload", "PutObject"),
        ("embed", "download", "GetObject"),
    ],
)
def test_s3_calls_are_aws_sdk_client_spans(photo_trace, service, step, operation):
    [span] = spans_named(photo_trace, service, f"S3.{operation}")
    assert lineage(span, photo_trace)[1] == (service, step)
    attributes = span["attributes"]
    assert (attributes["rpc.system"], attributes["rpc.service"]) == ("aws-api", "S3")
    assert (span["kind"], attributes["rpc.method"]) == ("client", operation)


@pytest.mark.parametrize("service", ["thumbnail", "embed"])
def test_the_database_lambda_call_is_an_aws_sdk_invoke_span(photo_trace, service):
    [span] = spans_named(photo_trace, service, "Lambda.Invoke")
    assert lineage(span, photo_trace)[1] == (service, "lambda")
    attributes = span["attributes"]
    assert (attributes["rpc.system"], attributes["rpc.service"]) == ("aws-api", "Lambda")
    assert attributes["faas.invoked_name"] == "photo-db-update"


def test_no_client_span_is_exported_outside_a_trace(traced_stack, photo_trace):
    # The status polls of wait_until_idle read Redis on the fast path, outside any span.
    spans = requests.get(f"{traced_stack.urls['otlp']}/spans", timeout=5).json()
    assert [s for s in spans if s["kind"] == "client" and not s["parent_span_id"]] == []


@pytest.mark.parametrize("service", ["thumbnail", "embed"])
def test_a_stages_log_lines_about_the_photo_carry_its_trace_id(traced_stack, photo_trace, service):
    [trace_id] = {span["trace_id"] for span in photo_trace}
    log = traced_stack.config.workdir / f"{service}.log"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    about_photo = [line for line in lines if line.get("key") == PHOTO_KEY]
    assert about_photo
    assert {(line["user"], line["trace_id"]) for line in about_photo} == {("tess", trace_id)}
