"""The B2 Event Notification webhook: turns uploads into CloudEvents on the broker.

Serve with `gunicorn 'eventing.receiver:create_app()'`. B2 retries a notification that is
not answered 2xx, so the receiver answers 200 only once the broker accepted every event, and
502/503 when one could not be published for a passing reason (broker refusing or down, Redis
down, too slow). An event that fails for an unexpected reason (a bug) is logged with its
traceback and counted, and the batch is answered by the other events: B2 retrying it would
only fail the same way, forever. It records an upload only once the broker accepted its
event, so an event B2 gives up on leaves no photo pending forever; recording is idempotent (a
retried batch counts once), and a stage that records the photo first also counts its upload.
A B2 eventId accepted within the de-duplication window (`WEBHOOK_DEDUP_WINDOW_S`) is dropped
when B2 delivers it again. It fails closed: it does not start without B2_WEBHOOK_SECRETS (unless
B2_WEBHOOK_ALLOW_UNSIGNED=true, for local tooling), answers 413 to a body over
MAX_WEBHOOK_BYTES before reading it and to a batch of more than B2's 50 events, and answers
failures with a generic body and a trace id, the details going to the log. Under Knative's
transport encryption the broker's address is HTTPS with a certificate from the cluster's own
CA, which the SinkBinding passes as K_CA_CERTS: the publisher trusts it besides the usual CAs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextvars import copy_context
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import requests.certs
from flask import Flask, request
from opentelemetry.trace import SpanKind
from requests.adapters import HTTPAdapter

from eventing.b2_webhook import (
    SIGNATURE_HEADER,
    TooManyEvents,
    Upload,
    parse_notification,
    verify_signature,
)
from functions.common.config import ReceiverSettings, RequestLimits, StatusSettings
from functions.common.errors import TransientError
from functions.common.events import OBJECT_CREATED, binary_http, new_event, photo_data
from functions.common.lanes import Lane, next_lane
from functions.common.logs import photo_context
from functions.common.metrics import (
    RECEIVER_EVENTS_ACCEPTED,
    RECEIVER_EVENTS_DUPLICATE,
    RECEIVER_EVENTS_FAILED,
    instrument,
)
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import UPLOADED
from functions.common.request_limits import limit_request_bodies
from functions.common.seen_events import SeenEvents
from functions.common.telemetry import (
    add_trace_context,
    configure_tracing,
    instrument_app,
    public_error,
    tracer,
)

if TYPE_CHECKING:
    from cloudevents.v1.http import CloudEvent

# A batch holds up to 50 events and B2 gives up after about 3 s, so publish in parallel.
PUBLISH_WORKERS = 16

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


class BrokerRejected(Exception):
    """The broker answered an event with something other than 2xx."""


class BrokerPublisher:
    """POSTs binary-mode CloudEvents to the broker (K_SINK); safe to share between threads."""

    def __init__(
        self,
        sink_url: str,
        timeout_s: float,
        ca_bundle: Path | None = None,
        connections: int = PUBLISH_WORKERS,
        token_file: Path | None = None,
    ) -> None:
        """`ca_bundle`: the CA certificates an HTTPS broker is verified with, when not the
        ones requests trusts by default. `token_file`: where the OIDC token the broker
        requires is mounted; sent as a bearer token whenever the file exists."""
        self._sink_url = sink_url
        self._timeout_s = timeout_s
        self._token_file = token_file
        # Passed with each request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE.
        self._verify: str | bool = str(ca_bundle) if ca_bundle else True
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=connections)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def publish(self, event: CloudEvent) -> None:
        """POST `event` carrying this span's trace context in its extension (the HTTP client
        span's goes in the `traceparent` header, from the requests instrumentation)."""
        with _tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("cloudevents.event_id", event["id"])
            span.set_attribute("photo.key", event.data["key"])
            headers, body = binary_http(add_trace_context(event))
            headers.update(self._authorization())
            response = self._session.post(
                self._sink_url,
                headers=headers,
                data=body,
                timeout=self._timeout_s,
                allow_redirects=False,
                verify=self._verify,
            )
            if not 200 <= response.status_code < 300:
                raise BrokerRejected(f"broker answered {response.status_code} to {event['id']}")

    def _authorization(self) -> dict[str, str]:
        try:
            token = self._token_file.read_text().strip() if self._token_file else ""
        except FileNotFoundError:
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}


def ca_bundle_with(extra_pem: str) -> Path:
    """A CA bundle file under TMPDIR: the CAs requests trusts by default, then `extra_pem`.
    Named by its content, so the workers of one pod write it once and share it; ValueError
    when `extra_pem` holds no PEM certificate."""
    try:
        ssl.create_default_context(cadata=extra_pem)
    except ssl.SSLError as exc:
        raise ValueError(f"K_CA_CERTS holds no usable PEM CA certificate: {exc}") from exc
    bundle = Path(requests.certs.where()).read_text() + "\n" + extra_pem.strip() + "\n"
    digest = hashlib.sha256(bundle.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"broker-ca-{digest}.pem"
    if not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(bundle)
        partial.replace(path)  # atomic: a concurrent reader sees all of it or nothing
    return path


# Failures worth B2 retrying the batch for: the broker refused, or something was down or slow.
TRANSIENT = (BrokerRejected, TransientError, TimeoutError, requests.RequestException)


@dataclass(frozen=True)
class Acceptor:
    """Takes one upload: publishes its event in its user's lane, records it, and remembers its
    B2 eventId. `interactive_below`: LANE_INTERACTIVE_BACKLOG."""

    store: PhotoStore
    seen: SeenEvents
    publisher: BrokerPublisher
    interactive_below: int

    def accept(self, upload: Upload) -> Lane | None:
        """The lane it was published in, once published and recorded; None when its eventId
        was accepted within the de-duplication window. It is remembered only once the broker
        took it, so an event whose publish failed is published when B2 delivers it again."""
        photo = upload.photo
        with photo_context(photo.user_id, photo.key):
            if self.seen.is_seen(upload.event_id):
                RECEIVER_EVENTS_DUPLICATE.inc()
                return None
            lane = self._lane(photo.user_id)
            self.publisher.publish(_upload_event(upload, lane))
            self.store.record(photo.user_id, photo.photo_id, UPLOADED, at=photo.uploaded_at)
            self.seen.remember(upload.event_id)
            return lane

    def _lane(self, user_id: str) -> Lane:
        backlog = self.store.backlog(user_id)
        lane = next_lane(backlog.waiting, backlog.in_bulk, self.interactive_below)
        if lane is Lane.BULK or backlog.in_bulk:  # each bulk upload renews the flag's hour
            self.store.set_bulk(user_id, lane is Lane.BULK)
        return lane


@dataclass
class Outcomes:
    """How a batch's uploads went; `transient` holds the errors worth a retry by B2."""

    accepted: int = 0
    duplicates: int = 0
    unexpected: int = 0
    transient: list[BaseException] = field(default_factory=list)

    def fail(self, upload: Upload, error: BaseException) -> None:
        """Count an upload not accepted: a transient error fails the batch (B2 retries it),
        any other one is a bug, logged with its traceback, and does not."""
        photo = upload.photo
        with photo_context(photo.user_id, photo.key):
            if isinstance(error, TRANSIENT):
                log.warning("upload %s (%r) not accepted: %s", upload.event_id, photo.key, error)
                RECEIVER_EVENTS_FAILED.labels("transient").inc()
                self.transient.append(error)
            else:
                message = "upload %s (%r) failed unexpectedly"
                log.error(message, upload.event_id, photo.key, exc_info=error)
                RECEIVER_EVENTS_FAILED.labels("unexpected").inc()
                self.unexpected += 1

    def answer(self, ignored: int) -> tuple[dict, int]:
        """The webhook's answer: 200 unless an upload failed for a transient reason."""
        if self.transient:
            failed = len(self.transient) + self.unexpected
            error = public_error(log, "events not accepted; retry later", self.transient[0])
            return {**error, "failed": failed}, _failure_status(self.transient)
        counts = {"accepted": self.accepted, "duplicates": self.duplicates, "ignored": ignored}
        return {**counts, "failed": self.unexpected}, 200


def create_app(
    settings: ReceiverSettings | None = None,
    store: PhotoStore | None = None,
    seen: SeenEvents | None = None,
    limits: RequestLimits | None = None,
) -> Flask:
    """The receiver; `store` and `seen` default to clients of REDIS_URL. ValueError when
    `settings` would accept unsigned webhooks without having been told to."""
    configure_tracing("receiver")
    settings = settings or ReceiverSettings.from_env()
    settings.require_signed_webhooks()
    limits = limits or RequestLimits.from_env()
    status_settings = StatusSettings.from_env()
    store = store or PhotoStore.from_settings(status_settings)
    seen = seen or SeenEvents.from_url(status_settings.redis_url, settings.dedup_window_s)
    ca_bundle = ca_bundle_with(settings.sink_ca_certs) if settings.sink_ca_certs else None
    publisher = BrokerPublisher(
        settings.sink_url,
        settings.publish_timeout_s,
        ca_bundle,
        token_file=settings.sink_token_file,
    )
    acceptor = Acceptor(store, seen, publisher, settings.lane_interactive_backlog)
    pool = ThreadPoolExecutor(max_workers=PUBLISH_WORKERS, thread_name_prefix="publish")
    # One trace per notification, from its HTTP server span: its every photo, every stage.
    app = instrument_app(Flask(__name__))

    @app.post("/")
    def notification() -> tuple[dict, int]:
        body = request.get_data()
        signature = request.headers.get(SIGNATURE_HEADER)
        with _tracer.start_as_current_span("verify"):
            verified = _signed(body, signature, settings)
        if not verified:
            return {"error": "invalid signature"}, 401
        try:
            parsed = parse_notification(body, settings)
        except TooManyEvents as exc:
            return {"error": str(exc)}, 413
        except ValueError as exc:
            return {"error": str(exc)}, 400
        outcomes = _accept_all(parsed.uploads, acceptor, pool, settings.answer_within_s)
        return outcomes.answer(parsed.ignored)

    @app.get("/healthz")
    def healthz() -> tuple[dict, int]:
        return {"status": "ok"}, 200

    instrument(app)
    limit_request_bodies(app, limits.webhook_bytes)
    return app


def _signed(body: bytes, signature: str | None, settings: ReceiverSettings) -> bool:
    """Whether the webhook is signed by a configured secret; any is, when local tooling
    allowed unsigned webhooks and set no secret."""
    if settings.allow_unsigned and not settings.signing_secrets:
        return True
    return verify_signature(body, signature, settings.signing_secrets)


def _upload_event(upload: Upload, lane: Lane) -> CloudEvent:
    """The `object.created` CloudEvent of an upload; its id is B2's, so retries share it."""
    photo = upload.photo
    data = photo_data(photo, event_type=upload.event_type)
    source = f"b2://{photo.bucket}"
    return new_event(OBJECT_CREATED, source, photo, data, upload.event_id, lane)


def _accept_all(
    uploads: Iterable[Upload], acceptor: Acceptor, pool: ThreadPoolExecutor, within_s: float
) -> Outcomes:
    """How accepting each upload went; one not accepted `within_s` is a transient error (its
    publish goes on, and once it is accepted B2's retry of the batch drops it as a duplicate)."""
    # Each task runs in a copy of this context, so its spans join the webhook's trace.
    futures: dict[Future[Lane | None], Upload] = {
        pool.submit(copy_context().run, acceptor.accept, upload): upload for upload in uploads
    }
    _, late = wait(futures, timeout=within_s)
    outcomes = Outcomes()
    for future, upload in futures.items():
        if future in late:
            outcomes.fail(upload, TimeoutError(f"not accepted within {within_s} s"))
        elif (error := future.exception()) is not None:
            outcomes.fail(upload, error)
        elif (lane := future.result()) is not None:
            outcomes.accepted += 1
            RECEIVER_EVENTS_ACCEPTED.labels(lane).inc()
        else:
            outcomes.duplicates += 1
    return outcomes


def _failure_status(errors: list[BaseException]) -> int:
    """502 when the broker refused every event that failed, 503 when it or Redis could not be
    reached, or took too long."""
    return 502 if all(isinstance(error, BrokerRejected) for error in errors) else 503
