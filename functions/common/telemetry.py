"""OpenTelemetry for every process, and the trace context that CloudEvents carry between them.

Spans are exported over OTLP/HTTP when the standard `OTEL_*` variables ask for it, and then
the ecosystem's instrumentations make the HTTP server (Flask), HTTP client (requests), Redis
and AWS SDK (botocore: S3, Lambda) spans; without them nothing is installed and every span is a
no-op. A CloudEvent carries the W3C trace context
of the span that produced it in the CloudEvents distributed-tracing extension (`traceparent`,
`tracestate`), so one trace follows a photo from the webhook through every stage, whichever
broker sits in between.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from flask import Flask
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from cloudevents.v1.http import CloudEvent

TRACE_EXTENSIONS = ("traceparent", "tracestate")
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The extension is defined as W3C Trace Context, whatever OTEL_PROPAGATORS says for HTTP.
_W3C = TraceContextTextMapPropagator()
# Probes and scrapes are not worth a trace each; OTEL_PYTHON_FLASK_EXCLUDED_URLS overrides.
_UNTRACED_URLS = "/healthz$,/metrics$"


def configure_tracing(service_name: str) -> TracerProvider | None:
    """Install an OTLP/HTTP-exporting tracer provider when an OTLP endpoint variable is set.

    The SDK reads the rest itself: OTEL_SERVICE_NAME (else `service_name`), the exporter's
    headers, timeout and certificate, OTEL_TRACES_SAMPLER and the OTEL_BSP_* batching.
    The requests, redis and botocore clients of this process are instrumented with it (Flask
    apps are, one by one, by `instrument_app`). Returns None, installing nothing, without an
    endpoint or with OTEL_SDK_DISABLED=true.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if not any(os.environ.get(variable) for variable in _ENDPOINT_VARIABLES):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.sampler = NoLoneClientSpans(provider.sampler)  # OTEL_TRACES_SAMPLER's, or default
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _instrument_clients()
    return provider


class NoLoneClientSpans(Sampler):
    """Samples as `inner` does, except a client span outside any trace: a Redis read of a
    status poll served before Flask (poll.py), of a /metrics scrape or of the sweeper would
    otherwise be a trace of one span each, thousands a minute."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoLoneClientSpans{{{self._inner.get_description()}}}"


def _instrument_clients() -> None:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    for instrumentor in (BotocoreInstrumentor(), RedisInstrumentor(), RequestsInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def instrument_app(app: Flask) -> Flask:
    """Give each request to `app` an HTTP server span, the child of the caller's `traceparent`
    header, when tracing is configured (`configure_tracing`); else `app` is left as it is.
    Middleware wrapped around `app.wsgi_app` after this call stays outside the span."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        excluded = os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS", _UNTRACED_URLS)
        FlaskInstrumentor().instrument_app(app, excluded_urls=excluded)
    return app


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def event_context(event: CloudEvent, headers: Mapping[str, str] | None = None) -> Context:
    """The parent of the span that handles `event`.

    The transport's `traceparent` header names the last hop (Knative's broker filter or
    queue-proxy, or the local broker) and wins, as the CloudEvents extension asks: the request's
    own server span (instrument_app), the child of that hop, when there is one, else the hop.
    Without that header, the event's own extension names the span that produced it.
    """
    if headers is not None:
        hop = propagate.extract(headers)
        if trace.get_current_span(hop).get_span_context().is_valid:
            current = context.get_current()
            return current if trace.get_current_span(current).is_recording() else hop
    carrier = {name: str(event[name]) for name in TRACE_EXTENSIONS if event.get(name)}
    return _W3C.extract(carrier)


def add_trace_context(event: CloudEvent) -> CloudEvent:
    """Set `event`'s distributed-tracing extension to the current span; unchanged without one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    for name, value in carrier.items():
        event[name] = value
    return event


def error_reference() -> str:
    """The current trace's id as 32 hex digits, to tie a client's error to its log line; a
    random one where no trace is recorded (tracing off, no caller's `traceparent`)."""
    context = trace.get_current_span().get_span_context()
    return format_trace_id(context.trace_id) if context.is_valid else secrets.token_hex(16)


def public_error(logger: logging.Logger, public: str, detail: object) -> dict[str, str]:
    """A client's error body: `public` and the trace id, never `detail` (hosts, ports, keys);
    `detail` is logged with the same trace id."""
    trace_id = error_reference()
    logger.warning("%s [trace_id=%s]: %s", public, trace_id, detail)
    return {"error": public, "trace_id": trace_id}
