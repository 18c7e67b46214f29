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

from functions.common.errors import PermanentError, TransientError
from functions.common.events import PhotoRef, binary_http, new_event, parse_event, photo_data
from functions.common.status_store import Stage, StatusStore
from functions.common.telemetry import tracer

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
    process: Callable[[PhotoRef, dict[str, Any]], StageResult]


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
        with span_tracer.start_as_current_span(spec.name) as span:
            span.set_attribute("photo.key", photo.key)
            span.set_attribute("user.id", photo.user_id)
            try:
                reply_type, data = _run(spec, store, photo, event.data)
            except TransientError as exc:
                log.warning(
                    "%s %s: transient failure, will be retried: %s", spec.name, photo.key, exc
                )
                return jsonify(error=str(exc)), 503
        headers, body = binary_http(new_event(reply_type, source, photo, data))
        return Response(body, status=200, headers=headers)

    @app.get("/healthz")
    def healthz() -> Response:
        # Created only after the stage's dependencies (the model, for embed) loaded.
        return jsonify(ready=True)

    return app


def _run(
    spec: StageSpec, store: StatusStore, photo: PhotoRef, event_data: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    try:
        result = spec.process(photo, event_data)
    except PermanentError as exc:
        log.info("%s %s: permanent failure %s", spec.name, photo.key, exc)
        store.record(
            photo.user_id, photo.photo_id, spec.failed, reason=exc.reason, detail=exc.detail
        )
        return spec.failed_type, photo_data(photo, reason=exc.reason, detail=exc.detail)
    store.record(photo.user_id, photo.photo_id, spec.done, faces=result.faces)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    log.info("%s %s: done in %.1f ms", spec.name, photo.key, elapsed_ms)
    return spec.created_type, photo_data(photo, **result.data)
