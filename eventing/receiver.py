"""The B2 Event Notification webhook: turns uploads into CloudEvents on the broker.

Serve with `gunicorn 'eventing.receiver:create_app()'`. B2 retries a notification that is
not answered 2xx, so the receiver answers 200 only once the broker accepted every event. It
records an upload only once the broker accepted its event, so an event B2 gives up on leaves
no photo pending forever; recording is idempotent (a retried batch counts once), and a stage
that records the photo first also counts its upload. Under Knative's
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
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import copy_context
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import requests.certs
from flask import Flask, request
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from requests.adapters import HTTPAdapter

from eventing.b2_webhook import SIGNATURE_HEADER, Upload, parse_notification, verify_signature
from functions.common.config import ReceiverSettings, StatusSettings
from functions.common.errors import TransientError
from functions.common.events import OBJECT_CREATED, binary_http, new_event, photo_data
from functions.common.metrics import instrument
from functions.common.status_store import Stage, StatusStore
from functions.common.telemetry import add_trace_context, configure_tracing, server_span, tracer

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
    ) -> None:
        """`ca_bundle`: the CA certificates an HTTPS broker is verified with, when not the
        ones requests trusts by default."""
        self._sink_url = sink_url
        self._timeout_s = timeout_s
        # Passed with each request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE.
        self._verify: str | bool = str(ca_bundle) if ca_bundle else True
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=connections)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def publish(self, event: CloudEvent) -> None:
        """POST `event` carrying this span's trace context, as extension and as HTTP header."""
        with _tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("cloudevents.event_id", event["id"])
            span.set_attribute("photo.key", event["subject"])
            headers, body = binary_http(add_trace_context(event))
            propagate.inject(headers)
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


def create_app(settings: ReceiverSettings | None = None, store: StatusStore | None = None) -> Flask:
    configure_tracing("receiver")
    settings = settings or ReceiverSettings.from_env()
    store = store or StatusStore.from_settings(StatusSettings.from_env())
    ca_bundle = ca_bundle_with(settings.sink_ca_certs) if settings.sink_ca_certs else None
    publisher = BrokerPublisher(settings.sink_url, settings.publish_timeout_s, ca_bundle)
    pool = ThreadPoolExecutor(max_workers=PUBLISH_WORKERS, thread_name_prefix="publish")
    app = Flask(__name__)

    @app.post("/")
    @server_span("webhook")  # one trace per notification: its every photo, through every stage
    def notification() -> tuple[dict, int]:
        body = request.get_data()
        signature = request.headers.get(SIGNATURE_HEADER)
        with _tracer.start_as_current_span("verify"):
            verified = verify_signature(body, signature, settings.signing_secrets)
        if not verified:
            return {"error": "invalid signature"}, 401
        try:
            parsed = parse_notification(body, settings)
        except ValueError as exc:
            return {"error": str(exc)}, 400
        errors = _accept_all(parsed.uploads, store, publisher, pool, settings.answer_within_s)
        if errors:
            return {"error": str(errors[0]), "failed": len(errors)}, _failure_status(errors)
        return {"accepted": len(parsed.uploads), "ignored": parsed.ignored}, 200

    @app.get("/healthz")
    def healthz() -> tuple[dict, int]:
        return {"status": "ok"}, 200

    instrument(app)
    return app


def _upload_event(upload: Upload) -> CloudEvent:
    """The `object.created` CloudEvent of an upload; its id is B2's, so retries share it."""
    photo = upload.photo
    data = photo_data(photo, event_type=upload.event_type)
    return new_event(OBJECT_CREATED, f"b2://{photo.bucket}", photo, data, event_id=upload.event_id)


def _accept_all(
    uploads: Iterable[Upload],
    store: StatusStore,
    publisher: BrokerPublisher,
    pool: ThreadPoolExecutor,
    within_s: float,
) -> list[BaseException]:
    """What went wrong accepting each upload; an upload not accepted `within_s` is an error
    (its publish goes on, and B2's retry of the batch is de-duplicated downstream)."""
    # Each task runs in a copy of this context, so its spans join the webhook's trace.
    futures = [
        pool.submit(copy_context().run, _accept, upload, store, publisher) for upload in uploads
    ]
    _, late = wait(futures, timeout=within_s)
    errors: list[BaseException] = [TimeoutError(f"not accepted within {within_s} s") for _ in late]
    errors += [error for error in (f.exception() for f in futures if f not in late) if error]
    for error in errors:
        log.warning("upload not accepted: %s", error)
    return errors


def _accept(upload: Upload, store: StatusStore, publisher: BrokerPublisher) -> None:
    publisher.publish(_upload_event(upload))
    photo = upload.photo
    store.record(photo.user_id, photo.photo_id, Stage.UPLOADED, at=photo.uploaded_at)


def _failure_status(errors: list[BaseException]) -> int:
    """502 when the broker refused events, 503 when it or the store could not be reached."""
    for error in errors:
        transient = (BrokerRejected, TransientError, TimeoutError, requests.RequestException)
        if not isinstance(error, transient):
            raise error
    return 502 if all(isinstance(error, BrokerRejected) for error in errors) else 503
