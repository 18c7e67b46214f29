"""The HTTP shape shared by the pipeline's stages (pipeline.toml).

A stage receives a CloudEvent about one photo, does its work, and replies with the next event:
- success: status recorded, 200 with the `*.created` CloudEvent (the broker routes it onward,
  in the photo's lane: every reply keeps the `lane` of the event it answers);
- permanent failure: status recorded as failed with its reason, 200 with `*.failed` (no retry);
- transient failure: 503, so the broker retries with backoff;
- not a CloudEvent, or not about a photo: 400 (the broker does not retry other 4xx);
- a body over MAX_EVENT_BYTES: 413, before it is read;
- with sender authentication on (EventAuthSettings), a delivery without a valid token from an
  allowed sender: 401 before the event is parsed (the broker dead-letters it, no retry).
A 503's body is generic (`error` and `trace_id`); its details go to the log with the trace id.
Every line logged while an event is handled names its photo (logs.photo_context); a photo that
fails has exactly one WARNING line, with its `reason`.

Delivery is at least once (B2 and the broker both retry), so every side effect is guarded by
one Redis read before the photo is downloaded (PhotoStore.claim): a photo this stage finished
already is answered with the reply event sent the first time, and nothing is done again; one
that another delivery is working on is answered 503; one whose attempts all died with their
worker (segfault, OOM kill) fails as `crashed` instead of killing the next worker too. The
outcome is recorded after the side effects, retried through a short Redis outage so that a
blip does not make the broker repeat them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request
from opentelemetry.trace import SpanKind, StatusCode

from functions.common.config import EventAuthSettings, RequestLimits
from functions.common.errors import PermanentError, TransientError
from functions.common.event_auth import EventAuthError, EventVerifier
from functions.common.events import PhotoRef, binary_http, new_event, parse_event, photo_data
from functions.common.lanes import Lane, lane_of
from functions.common.logs import photo_context
from functions.common.metrics import instrument, observe_stage
from functions.common.photo_store import Claim, PhotoStore
from functions.common.pipeline import Stage
from functions.common.request_limits import limit_request_bodies
from functions.common.telemetry import (
    add_trace_context,
    event_context,
    instrument_app,
    public_error,
    tracer,
)

if TYPE_CHECKING:
    from cloudevents.v1.http import CloudEvent

log = logging.getLogger(__name__)

# How long a stage keeps trying to record a photo it processed while Redis is unreachable
# (a restart, a failover) before answering 503, which makes the broker repeat the work.
RECORD_RETRY_S = 15.0


@dataclass(frozen=True)
class StageResult:
    """What a stage's work produced: data for the reply event, and faces found (embed)."""

    data: dict[str, Any]
    faces: int = 0


Process = Callable[[PhotoRef], StageResult]


def create_stage_app(
    stage: Stage,
    process: Process,
    store: PhotoStore,
    limits: RequestLimits | None = None,
    event_auth: EventAuthSettings | None = None,
) -> Flask:
    """The stage's app: each event's photo claimed, given to `process`, its outcome recorded
    and answered with the reply event (pipeline.toml's row `stage` names them)."""
    app = instrument_app(Flask(stage.name))
    senders = EventVerifier(event_auth or EventAuthSettings.from_env())
    source = f"/functions/{stage.name}"
    span_tracer = tracer(f"functions.{stage.name}")

    @app.post("/")
    def handle() -> Response | tuple[Any, ...]:
        refused = authenticate_sender(senders, stage.name)
        if refused is not None:
            return refused
        try:
            event = parse_event(request.headers, request.get_data())
            photo = PhotoRef.from_data(event.data)
        except (ValueError, KeyError, TypeError) as exc:
            return jsonify(error=f"bad event: {exc}"), 400
        parent = event_context(event, request.headers)
        with (
            photo_context(photo.user_id, photo.key),
            span_tracer.start_as_current_span(
                stage.name, context=parent, kind=SpanKind.CONSUMER
            ) as span,
        ):
            span.set_attribute("cloudevents.event_id", event["id"])
            span.set_attribute("cloudevents.event_type", event["type"])
            span.set_attribute("photo.key", photo.key)
            span.set_attribute("user.id", photo.user_id)
            started = time.perf_counter()
            try:
                reply = _run(stage, process, store, photo, _Origin(source, lane_of(event)))
            except TransientError as exc:
                observe_stage(stage.name, "retried", "transient", time.perf_counter() - started)
                span.set_status(StatusCode.ERROR, str(exc))
                detail = f"{stage.name}: will be retried: {exc}"
                return jsonify(public_error(log, "temporarily unavailable", detail)), 503
        if reply is None:
            return Response(status=200)
        headers, body = binary_http(reply)
        return Response(body, status=200, headers=headers)

    @app.get("/healthz")
    def healthz() -> Response:
        # Created only after the stage's dependencies (the model, for embed) loaded.
        return jsonify(ready=True)

    instrument(app)
    limit_request_bodies(app, (limits or RequestLimits.from_env()).event_bytes)
    return app


def authenticate_sender(
    senders: EventVerifier, name: str
) -> tuple[Response, int, dict[str, str]] | None:
    """None when the request's sender is allowed (or verification is off); else the answer:
    401 for a missing or invalid token, 503 when the issuer's keys cannot be fetched."""
    try:
        senders.verify(request.headers.get("Authorization"))
    except EventAuthError as exc:
        log.warning("%s: refused an event: %s", name, exc)
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return jsonify(error="unauthenticated event"), 401, challenge
    except TransientError as exc:
        return jsonify(public_error(log, "temporarily unavailable", exc)), 503, {}
    return None


def _run(
    stage: Stage, process: Process, store: PhotoStore, photo: PhotoRef, origin: _Origin
) -> CloudEvent | None:
    """Process the photo once and record its outcome: status, reply, latency sample, metrics.
    The reply event; None for a duplicate of a photo whose reply is no longer kept."""
    claim = store.claim(photo.user_id, photo.photo_id, stage)
    if claim.outcome == "finished":
        observe_stage(stage.name, "duplicate", "none", 0.0)
        log.info("%s finished already: answered as the first time", stage.name)
        return _replayed(claim.reply, origin, photo)
    if claim.outcome == "busy":
        raise TransientError(f"another delivery of {photo.photo_id} is being processed")
    started = time.perf_counter()
    try:
        result = _process(stage, process, store, photo, claim)
    except PermanentError as exc:
        seconds = time.perf_counter() - started
        reply = _reply(stage.failed_event, origin, photo, reason=exc.reason, detail=exc.detail)
        _settle(
            store,
            photo,
            stage.failed,
            reply,
            reason=exc.reason,
            detail=exc.detail,
            duration_ms=seconds * 1000,
        )
        observe_stage(stage.name, "failed", exc.reason, seconds)
        # The photo's one line saying why it failed: once recorded, no retry comes to log it
        # again.
        log.warning("%s failed: %s", stage.name, exc, extra={"reason": exc.reason})
        return reply
    seconds = time.perf_counter() - started
    reply = _reply(stage.created, origin, photo, **result.data)
    _settle(store, photo, stage.done, reply, faces=result.faces, duration_ms=seconds * 1000)
    observe_stage(stage.name, "done", "none", seconds)
    log.info("%s done in %.1f ms", stage.name, seconds * 1000)
    return reply


def _process(
    stage: Stage, process: Process, store: PhotoStore, photo: PhotoRef, claim: Claim
) -> StageResult:
    """The stage's work on a claimed photo; a claim whose attempts all crashed fails instead.
    An attempt that ends with an exception gives its claim back: it is no crash."""
    if claim.outcome == "crashed":
        raise PermanentError(
            "crashed", f"the worker died on each of the {claim.crashes} attempts on this photo"
        )
    try:
        return process(photo)
    except PermanentError:
        raise
    except Exception:
        _release(store, photo, stage, claim)
        raise


def _release(store: PhotoStore, photo: PhotoRef, stage: Stage, claim: Claim) -> None:
    try:
        store.release(photo.user_id, photo.photo_id, stage, claim)
    except TransientError as exc:  # the lease lapses by itself
        log.warning("could not give back the claim on %s: %s", photo.photo_id, exc)


@dataclass(frozen=True)
class _Origin:
    """Where a reply comes from (the stage's CloudEvents source) and the lane it keeps: its
    photo's, so the next stage's Trigger for that lane takes it."""

    source: str
    lane: Lane


def _reply(event_type: str, origin: _Origin, photo: PhotoRef, **fields: Any) -> CloudEvent:
    # Created inside the stage's span, so the next stage's span is this one's child.
    data = photo_data(photo, **fields)
    return add_trace_context(new_event(event_type, origin.source, photo, data, lane=origin.lane))


def _replayed(stored: dict[str, Any] | None, origin: _Origin, photo: PhotoRef) -> CloudEvent | None:
    if stored is None:
        return None
    event = new_event(
        stored["type"], origin.source, photo, stored["data"], stored["id"], origin.lane
    )
    return add_trace_context(event)


def _settle(
    store: PhotoStore, photo: PhotoRef, state: str, reply: CloudEvent, **outcome: Any
) -> None:
    """Record the outcome and the reply, retrying through a short Redis outage: once the side
    effects are done, answering 503 would make the broker do them again."""
    stored = {"id": reply["id"], "type": reply["type"], "data": reply.data}
    deadline = time.monotonic() + RECORD_RETRY_S
    delay = 0.1
    while True:
        try:
            store.record(photo.user_id, photo.photo_id, state, reply=stored, **outcome)
            return
        except TransientError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
