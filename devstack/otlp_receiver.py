"""A stand-in OpenTelemetry Collector: LOCAL TOOLING AND TESTS ONLY.

Production exports spans to an OpenTelemetry Collector, which forwards them to Jaeger. This
accepts what the functions' OTLP/HTTP exporter sends, `POST /v1/traces` with a binary-protobuf
`ExportTraceServiceRequest` (plain, gzip or deflate), decodes it with opentelemetry-proto as the
Collector's OTLP receiver does, and keeps every span for `GET /spans` (JSON), so the local
stack's traces can be inspected and asserted on. Not supported: OTLP/JSON, gRPC, metrics, logs.

    python -m devstack.otlp_receiver --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from flask import Flask, Response, jsonify, request
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from werkzeug.serving import make_server

PROTOBUF = "application/x-protobuf"
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda body: body,
    "identity": lambda body: body,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


def decode_spans(export: ExportTraceServiceRequest) -> Iterator[dict[str, Any]]:
    """Every span in an export, flattened to JSON-ready dicts with hex ids."""
    for resource_spans in export.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "service": resource.get("service.name"),
                    "scope": scope_spans.scope.name,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),  # "" for a root span
                    "name": span.name,
                    "kind": Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").lower(),
                    "start_unix_nano": span.start_time_unix_nano,
                    "end_unix_nano": span.end_time_unix_nano,
                    "attributes": attributes(span.attributes),
                    "status": Status.StatusCode.Name(span.status.code)
                    .removeprefix("STATUS_CODE_")
                    .lower(),
                }


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


class SpanStore:
    """The spans received so far, in arrival order; safe to share between request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []

    def add(self, spans: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._spans)


def create_app(store: SpanStore | None = None) -> Flask:
    store = store or SpanStore()
    app = Flask(__name__)

    @app.post("/v1/traces")
    def export_traces() -> Response | tuple[Any, int]:
        if request.mimetype != PROTOBUF:
            return jsonify(error=f"expected {PROTOBUF}, got {request.mimetype!r}"), 415
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding not in _DECOMPRESS:
            return jsonify(error=f"unsupported Content-Encoding {encoding!r}"), 415
        export = ExportTraceServiceRequest()
        try:
            export.ParseFromString(_DECOMPRESS[encoding](request.get_data()))
        except (DecodeError, OSError, zlib.error) as exc:
            return jsonify(error=f"not an ExportTraceServiceRequest: {exc}"), 400
        store.add(decode_spans(export))
        return Response(ExportTraceServiceResponse().SerializeToString(), mimetype=PROTOBUF)

    @app.get("/spans")
    def spans() -> Response:
        return jsonify(store.all())

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)
    make_server(args.host, args.port, create_app(), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
