"""The HTTP shape shared by the pipeline's stages (thumbnail, embed).

A stage receives a CloudEvent about one photo, does its work, and replies with the next event:
- success: status recorded, 200 with the `*.created` CloudEvent (the broker routes it onward);
- permanent failure: status recorded as failed with its reason, 200 with `*.failed` (no retry);
- transient failure: 503, so the broker retries with backoff;
- not a CloudEvent, or not about a photo: 400 (the broker does not retry other 4xx).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from opentelemetry.trace import SpanKind, StatusCode

from functions.common.errors import PermanentError, TransientError
from functions.common.events import PhotoRef, binary_http, new_event, parse_event, photo_data
from functions.common.metrics import instrument, observe_stage
from functions.common.status_store import Stage, StatusStore
from functions.common.telemetry import add_trace_context, event_context, tracer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    """What a stage's work produced: data for the reply event, and faces found (embed)."""

    data: dict[str, Any]
    faces: int = 0


@dataclass(frozen=True)
class StageSpec:
    name: str
    done: Stage
    failed: Stage
    created_type: str
    failed_type: str
    process: Callable[[PhotoRef], StageResult]


def create_stage_app(spec: StageSpec, store: StatusStore) -> Flask:
    app = Flask(spec.name)
    source = f"/functions/{spec.name}"
    span_tracer = tracer(f"functions.{spec.name}")

    @app.post("/")
    def handle() -> Response | tuple[Any, int]:
        try:
            event = parse_event(request.headers, request.get_data())
            photo = PhotoRef.from_data(event.data)
        except (ValueError, KeyError, TypeError) as exc:
            return jsonify(error=f"bad event: {exc}"), 400
        parent = event_context(event, request.headers)
        with span_tracer.start_as_current_span(
            spec.name, context=parent, kind=SpanKind.SERVER
        ) as span:
            span.set_attribute("cloudevents.event_id", event["id"])
            span.set_attribute("cloudevents.event_type", event["type"])
            span.set_attribute("photo.key", photo.key)
            span.set_attribute("user.id", photo.user_id)
            started = time.perf_counter()
            try:
                reply_type, data = _run(spec, store, photo)
            except TransientError as exc:
                observe_stage(spec.name, "retried", "transient", time.perf_counter() - started)
                log.warning(
                    "%s %s: transient failure, will be retried: %s", spec.name, photo.key, exc
                )
                span.set_status(StatusCode.ERROR, str(exc))
                return jsonify(error=str(exc)), 503
            # Created inside the span, so the next stage's span is this one's child.
            reply = add_trace_context(new_event(reply_type, source, photo, data))
        headers, body = binary_http(reply)
        return Response(body, status=200, headers=headers)

    @app.get("/healthz")
    def healthz() -> Response:
        # Created only after the stage's dependencies (the model, for embed) loaded.
        return jsonify(ready=True)

    instrument(app)
    return app


def _run(spec: StageSpec, store: StatusStore, photo: PhotoRef) -> tuple[str, dict[str, Any]]:
    """Process the photo and record its outcome: status, latency sample and metrics."""
    started = time.perf_counter()
    try:
        result = spec.process(photo)
    except PermanentError as exc:
        seconds = time.perf_counter() - started
        log.info("%s %s: permanent failure %s", spec.name, photo.key, exc)
        store.record(
            photo.user_id,
            photo.photo_id,
            spec.failed,
            reason=exc.reason,
            detail=exc.detail,
            duration_ms=seconds * 1000,
        )
        observe_stage(spec.name, "failed", exc.reason, seconds)
        return spec.failed_type, photo_data(photo, reason=exc.reason, detail=exc.detail)
    seconds = time.perf_counter() - started
    store.record(
        photo.user_id, photo.photo_id, spec.done, faces=result.faces, duration_ms=seconds * 1000
    )
    observe_stage(spec.name, "done", "none", seconds)
    log.info("%s %s: done in %.1f ms", spec.name, photo.key, seconds * 1000)
    return spec.created_type, photo_data(photo, **result.data)
