"""OpenTelemetry for every process, and the trace context that CloudEvents carry between them.

Spans are exported over OTLP/HTTP when the standard `OTEL_*` variables ask for it; without
them nothing is installed and every span is a no-op. A CloudEvent carries the W3C trace context
of the span that produced it in the CloudEvents distributed-tracing extension (`traceparent`,
`tracestate`), so one trace follows a photo from the webhook through every stage, whichever
broker sits in between.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from flask import request
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from cloudevents.v1.http import CloudEvent

TRACE_EXTENSIONS = ("traceparent", "tracestate")
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The extension is defined as W3C Trace Context, whatever OTEL_PROPAGATORS says for HTTP.
_W3C = TraceContextTextMapPropagator()

View = TypeVar("View", bound=Callable[..., Any])


def configure_tracing(service_name: str) -> TracerProvider | None:
    """Install an OTLP/HTTP-exporting tracer provider when an OTLP endpoint variable is set.

    The SDK reads the rest itself: OTEL_SERVICE_NAME (else `service_name`), the exporter's
    headers, timeout and certificate, OTEL_TRACES_SAMPLER and the OTEL_BSP_* batching.
    Returns None, installing nothing, without an endpoint or with OTEL_SDK_DISABLED=true.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if not any(os.environ.get(variable) for variable in _ENDPOINT_VARIABLES):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def event_context(event: CloudEvent, headers: Mapping[str, str] | None = None) -> Context:
    """The parent of the span that handles `event`.

    The transport's `traceparent` header names the last hop (Knative's broker filter or
    queue-proxy, or the local broker) and wins, as the CloudEvents extension asks; without
    one, the event's own extension names the span that produced it.
    """
    if headers is not None:
        hop = propagate.extract(headers)
        if trace.get_current_span(hop).get_span_context().is_valid:
            return hop
    carrier = {name: str(event[name]) for name in TRACE_EXTENSIONS if event.get(name)}
    return _W3C.extract(carrier)


def add_trace_context(event: CloudEvent) -> CloudEvent:
    """Set `event`'s distributed-tracing extension to the current span; unchanged without one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    for name, value in carrier.items():
        event[name] = value
    return event


def server_span(name: str) -> Callable[[View], View]:
    """Run a Flask view in a SERVER span `name`, continuing the caller's `traceparent` if any."""

    def decorate(view: View) -> View:
        view_tracer = tracer(view.__module__)

        @functools.wraps(view)
        def traced(*args: Any, **kwargs: Any) -> Any:
            parent = propagate.extract(request.headers)
            with view_tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER):
                return view(*args, **kwargs)

        return traced  # type: ignore[return-value]

    return decorate


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
