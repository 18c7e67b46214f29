"""A stand-in for a Knative Eventing Broker: LOCAL TOOLING AND TESTS ONLY.

Production routes events with Knative Eventing. This reads the same Trigger manifests and
does what the pipeline relies on: exact-match `filter.attributes`, or `filters` (the
`exact`, `prefix`, `suffix`, `all`, `any` and `not` dialects; which replace `filter` when both
are set, as in Knative), binary-mode delivery,
replies routed back into the broker, Knative's retries (404, 408, 409, 429, 5xx and
connection errors) and backoff, and dead-letter sinks with the `knativeerror*` extensions.
Like Knative's broker it traces each delivery in a span, child of the event's
distributed-tracing extension, and passes that span on in the HTTP `traceparent` header; the
event's own extension attributes go through unchanged.
Not supported: the `cesql` filter dialect, several brokers, Retry-After, authentication,
events whose data is not JSON (answered 400).

    python -m devstack.local_broker --port 8090 --triggers eventing/triggers.yaml \\
        --service thumbnail=http://127.0.0.1:8081 --service embed=http://127.0.0.1:8082 \\
        --service status-dead-letter=http://127.0.0.1:8083
"""

from __future__ import annotations

import argparse
import base64
import logging
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin

import requests
import yaml
from flask import Flask, request
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from requests.adapters import HTTPAdapter
from werkzeug.serving import BaseWSGIServer, make_server

from functions.common.events import USER_ID_EXTENSION, binary_http, parse_event
from functions.common.logs import configure_logging
from functions.common.telemetry import configure_tracing, event_context, tracer

if TYPE_CHECKING:
    from cloudevents.v1.http import CloudEvent

DEFAULT_WORKERS = 16
# Knative truncates the base64 of the failed response body to this many characters.
ERROR_DATA_MAX_CHARS = 1024

_RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"P(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?"
)
_COUNTERS = ("delivered", "retried", "dead_lettered", "failed", "in_flight")

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as `PT0.5S` or `PT1M30S`."""
    match = _DURATION.fullmatch(text)
    if match is None or text.endswith(("P", "T")):
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    parts = {name: float(value) for name, value in match.groupdict("0").items()}
    return parts["days"] * 86400 + parts["hours"] * 3600 + parts["minutes"] * 60 + parts["seconds"]


@dataclass(frozen=True)
class Delivery:
    """A Trigger's `delivery` spec with its durations parsed and dead-letter sink resolved."""

    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay_s: float = 0.0
    timeout_s: float | None = None
    dead_letter_url: str | None = None

    def backoff_s(self, retry_index: int) -> float:
        """The wait before retry `retry_index`, counted from 0 as Knative does.

        So exponential waits delay, 2x delay, 4x delay...; linear waits 0, delay, 2x delay...
        """
        if self.backoff_policy == "linear":
            return self.backoff_delay_s * retry_index
        return self.backoff_delay_s * 2**retry_index


Filter = Callable[["CloudEvent"], bool]


def _matching(test: Callable[[str, str], bool]) -> Callable[[Mapping[str, str]], Filter]:
    """A dialect that holds when its one attribute is there and passes `test` against the value
    given for it; an absent attribute never matches. Knative refuses an expression with more
    than one attribute ("can have only one key-value"), and so does this."""

    def dialect(attributes: Mapping[str, str]) -> Filter:
        if len(attributes) != 1:
            raise ValueError(f"a filter expression names exactly one attribute: {attributes}")
        [(name, wanted)] = attributes.items()

        def matches(event: CloudEvent) -> bool:
            value = event.get(name)
            return value is not None and test(str(value), wanted)

        return matches

    return dialect


_ATTRIBUTE_DIALECTS = {
    "exact": _matching(str.__eq__),
    "prefix": _matching(str.startswith),
    "suffix": _matching(str.endswith),
}


def parse_filter(expression: Mapping[str, Any]) -> Filter:
    """One expression of a Trigger's `filters` (Knative's new trigger filters, the dialects of
    the CloudEvents Subscriptions API); ValueError for `cesql` or an unknown dialect."""
    if len(expression) != 1:
        raise ValueError(f"a filter expression has exactly one dialect: {dict(expression)}")
    [(dialect, value)] = expression.items()
    if dialect in ("all", "any"):
        parts = [parse_filter(item) for item in value]
        combine = all if dialect == "all" else any
        return lambda event: combine(part(event) for part in parts)
    if dialect == "not":
        negated = parse_filter(value)
        return lambda event: not negated(event)
    if dialect not in _ATTRIBUTE_DIALECTS:
        raise ValueError(f"filter dialect {dialect!r} is not supported by the local broker")
    return _ATTRIBUTE_DIALECTS[dialect](value)


@dataclass(frozen=True)
class Trigger:
    name: str
    filter: Filter
    subscriber_url: str
    delivery: Delivery

    def matches(self, event: CloudEvent) -> bool:
        return self.filter(event)


def load_triggers(paths: Iterable[str | Path], services: Mapping[str, str]) -> list[Trigger]:
    """The Triggers in the manifest files; a Broker among them supplies the default delivery.

    `services` maps a Knative Service name to the URL it is served at locally.
    """
    documents = [doc for path in paths for doc in yaml.safe_load_all(Path(path).read_text()) if doc]
    broker_delivery = next(
        (doc["spec"].get("delivery") for doc in documents if doc.get("kind") == "Broker"), None
    )
    triggers = [doc for doc in documents if doc.get("kind") == "Trigger"]
    return [_trigger(manifest, broker_delivery, services) for manifest in triggers]


def resolve_destination(destination: Mapping[str, Any], services: Mapping[str, str]) -> str:
    """The URL of a Knative destination: its `ref` (a Service) with `uri` resolved against it."""
    uri = destination.get("uri")
    ref = destination.get("ref")
    if ref is None:
        if not uri:
            raise ValueError(f"destination has neither ref nor uri: {dict(destination)}")
        return uri
    if ref.get("kind") != "Service" or ref.get("name") not in services:
        raise ValueError(f"no --service URL for {ref.get('kind')} {ref.get('name')!r}")
    base = services[ref["name"]]
    return urljoin(base, uri) if uri else base


def _trigger(
    manifest: Mapping[str, Any],
    broker_delivery: Mapping[str, Any] | None,
    services: Mapping[str, str],
) -> Trigger:
    name = manifest["metadata"]["name"]
    spec = manifest["spec"]
    if spec.get("filters"):
        expressions = [parse_filter(expression) for expression in spec["filters"]]
        matches = _all_of(expressions)
    else:
        # The older `filter`: every attribute it names must match exactly (none: every event).
        attributes = (spec.get("filter") or {}).get("attributes") or {}
        exact = _ATTRIBUTE_DIALECTS["exact"]
        matches = _all_of([exact({name: value}) for name, value in attributes.items()])
    return Trigger(
        name=name,
        filter=matches,
        subscriber_url=resolve_destination(spec["subscriber"], services),
        # As in Knative, a Trigger's own delivery replaces the Broker's as a whole.
        delivery=_delivery(spec.get("delivery") or broker_delivery or {}, services),
    )


def _all_of(filters: Sequence[Filter]) -> Filter:
    return lambda event: all(matches(event) for matches in filters)


def _delivery(spec: Mapping[str, Any], services: Mapping[str, str]) -> Delivery:
    dead_letter_sink = spec.get("deadLetterSink")
    dead_letter_url = resolve_destination(dead_letter_sink, services) if dead_letter_sink else None
    return Delivery(
        retry=int(spec.get("retry", 0)),
        backoff_policy=spec.get("backoffPolicy", "exponential"),
        backoff_delay_s=parse_duration(spec["backoffDelay"]) if "backoffDelay" in spec else 0.0,
        timeout_s=parse_duration(spec["timeout"]) if "timeout" in spec else None,
        dead_letter_url=dead_letter_url,
    )


@dataclass(frozen=True)
class _Outcome:
    """What one POST to a destination came back with; `status` None when nothing came back."""

    status: int | None
    headers: Mapping[str, str]
    body: bytes

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in _RETRYABLE_STATUSES


class _Stats:
    """The counters of GET /stats; `in_flight` counts events queued, being sent or backing off;
    `delivered_by_user` each Trigger's deliveries per `userid` extension (the demo's lanes)."""

    def __init__(self, trigger_names: Iterable[str]) -> None:
        self._changed = threading.Condition()
        self._received = 0
        self._triggers = {name: dict.fromkeys(_COUNTERS, 0) for name in trigger_names}
        self._by_user: dict[str, Counter[str]] = {name: Counter() for name in self._triggers}

    def count_received(self) -> None:
        with self._changed:
            self._received += 1

    def add(self, trigger: str, counter: str, delta: int = 1) -> None:
        with self._changed:
            self._triggers[trigger][counter] += delta
            self._changed.notify_all()

    def delivered(self, trigger: str, user_id: str) -> None:
        with self._changed:
            self._by_user[trigger][user_id] += 1
        self.add(trigger, "delivered")

    def snapshot(self) -> dict[str, Any]:
        with self._changed:
            received = self._received
            triggers = {
                name: {**counters, "delivered_by_user": dict(self._by_user[name])}
                for name, counters in self._triggers.items()
            }
        totals = {counter: sum(c[counter] for c in triggers.values()) for counter in _COUNTERS}
        return {"received": received, **totals, "triggers": triggers}

    def wait_idle(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(self._idle, timeout_s)

    def _idle(self) -> bool:
        return all(counters["in_flight"] == 0 for counters in self._triggers.values())


class LocalBroker:
    """Routes CloudEvents to the subscribers of matching Triggers, concurrently per Trigger."""

    def __init__(self, triggers: Sequence[Trigger], workers: int = DEFAULT_WORKERS) -> None:
        self._triggers = list(triggers)
        self._pools = {
            trigger.name: ThreadPoolExecutor(workers, thread_name_prefix=f"trigger-{trigger.name}")
            for trigger in self._triggers
        }
        self._stats = _Stats(trigger.name for trigger in self._triggers)
        self._stopping = threading.Event()
        self._session = _session(connections=workers * max(1, len(self._triggers)))
        self._server: BaseWSGIServer | None = None
        self._serving: threading.Thread | None = None

    @classmethod
    def from_manifests(
        cls,
        paths: Iterable[str | Path],
        services: Mapping[str, str],
        workers: int = DEFAULT_WORKERS,
    ) -> LocalBroker:
        return cls(load_triggers(paths, services), workers)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the broker's HTTP ingress in a thread; returns its URL."""
        self._server = make_server(host, port, _ingress_app(self), threaded=True)
        self._serving = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="broker-ingress", daemon=True
        )
        self._serving.start()
        return f"http://{host}:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None and self._serving is not None:
            self._server.shutdown()
            self._serving.join()
        self._stopping.set()
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._session.close()

    def publish(self, event: CloudEvent) -> None:
        """Queue `event` for every Trigger whose filter it matches."""
        self._stats.count_received()
        if self._stopping.is_set():
            return
        for trigger in self._triggers:
            if trigger.matches(event):
                self._stats.add(trigger.name, "in_flight")
                self._pools[trigger.name].submit(self._deliver, trigger, event)

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once no event is in flight (replies included), False after `timeout_s`."""
        return self._stats.wait_idle(timeout_s)

    def _deliver(self, trigger: Trigger, event: CloudEvent) -> None:
        try:
            with _tracer.start_as_current_span(
                f"trigger {trigger.name}", context=event_context(event), kind=SpanKind.PRODUCER
            ):
                message = binary_http(event)
                outcome = self._send_with_retries(trigger, trigger.subscriber_url, message)
                if outcome.succeeded:
                    # The extension is the user id percent-encoded (events.header_safe).
                    user_id = unquote(str(event.get(USER_ID_EXTENSION) or ""))
                    self._stats.delivered(trigger.name, user_id)
                    self._route_reply(outcome)
                elif not self._stopping.is_set():
                    self._dead_letter(trigger, event, outcome)
        except Exception:  # an executor would swallow it silently
            log.exception("delivering %s to trigger %s failed", event["id"], trigger.name)
        finally:
            # After routing the reply, so the broker never looks idle between the two events.
            self._stats.add(trigger.name, "in_flight", -1)

    def _send_with_retries(
        self, trigger: Trigger, url: str, message: tuple[dict[str, str], bytes]
    ) -> _Outcome:
        delivery = trigger.delivery
        outcome = self._send(url, message, delivery.timeout_s)
        for retry in range(delivery.retry):
            if not outcome.retryable or self._stopping.wait(delivery.backoff_s(retry)):
                break
            self._stats.add(trigger.name, "retried")
            outcome = self._send(url, message, delivery.timeout_s)
        return outcome

    def _send(
        self, url: str, message: tuple[dict[str, str], bytes], timeout_s: float | None
    ) -> _Outcome:
        headers, body = message
        headers = {**headers}
        propagate.inject(headers)  # the delivery span, as Knative's dispatcher sends it
        try:
            response = self._session.post(
                url, headers=headers, data=body, timeout=timeout_s, allow_redirects=False
            )
        except requests.RequestException as exc:
            return _Outcome(status=None, headers={}, body=f"dispatch error: {exc}".encode())
        return _Outcome(
            status=response.status_code, headers=response.headers, body=response.content
        )

    def _route_reply(self, response: _Outcome) -> None:
        if not _carries_event(response.headers):
            return
        try:
            reply = parse_event(response.headers, response.body)
        except ValueError as exc:
            log.warning("ignoring a reply that is not a valid CloudEvent: %s", exc)
            return
        self.publish(reply)

    def _dead_letter(self, trigger: Trigger, event: CloudEvent, failure: _Outcome) -> None:
        url = trigger.delivery.dead_letter_url
        if url is None:
            log.error("dropping %s: trigger %s has no dead-letter sink", event["id"], trigger.name)
            self._stats.add(trigger.name, "failed")
            return
        headers, body = binary_http(event)
        headers.update(_error_extensions(trigger.subscriber_url, failure))
        if self._send_with_retries(trigger, url, (headers, body)).succeeded:
            self._stats.add(trigger.name, "dead_lettered")
        else:
            log.error("dropping %s: its dead-letter sink %s failed too", event["id"], url)
            self._stats.add(trigger.name, "failed")


def _error_extensions(destination: str, failure: _Outcome) -> dict[str, str]:
    """Knative's dead-letter extension attributes, as binary-mode headers."""
    data = base64.b64encode(failure.body).decode()[:ERROR_DATA_MAX_CHARS]
    return {
        "ce-knativeerrordest": destination,
        # Knative reports a connection error or timeout as 500.
        "ce-knativeerrorcode": str(failure.status or 500),
        "ce-knativeerrordata": data,
    }


def _carries_event(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "")
    return "ce-specversion" in headers or content_type.startswith("application/cloudevents")


def _session(connections: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _ingress_app(broker: LocalBroker) -> Flask:
    app = Flask(__name__)

    @app.post("/")
    def ingest() -> tuple[dict | str, int]:
        try:
            event = parse_event(request.headers, request.get_data())
        except ValueError as exc:
            return {"error": str(exc)}, 400
        broker.publish(event)
        return "", 202

    @app.get("/healthz")
    def healthz() -> tuple[dict, int]:
        return {"status": "ok"}, 200

    @app.get("/stats")
    def stats() -> tuple[dict, int]:
        return broker.stats(), 200

    return app


def _service(text: str) -> tuple[str, str]:
    name, _, url = text.partition("=")
    if not name or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {text!r}")
    return name, url


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--triggers",
        action="append",
        required=True,
        type=Path,
        help="Trigger (and Broker) manifest file; repeatable",
    )
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        type=_service,
        metavar="NAME=URL",
        help="where the Knative Service NAME is served locally; repeatable",
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="per trigger")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _arguments(argv)
    configure_logging()
    configure_tracing("broker")
    broker = LocalBroker.from_manifests(args.triggers, dict(args.service), args.workers)
    log.info("local broker listening on %s", broker.start(args.host, args.port))
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    broker.stop()


if __name__ == "__main__":
    main()
