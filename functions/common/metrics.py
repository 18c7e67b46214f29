"""Prometheus metrics shared by every function, and the `/metrics` route that serves them.

Under gunicorn each worker is a process: with PROMETHEUS_MULTIPROC_DIR set (gunicorn_conf.py
sets it before any worker imports this module) prometheus-client keeps each worker's values in
files there, and `/metrics` adds them up across workers, whichever worker answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# WSGI environ key: when a request's handling began, set by middleware that ran first.
REQUEST_STARTED = "metrics.request_started"

# Seconds; includes each stage's default threshold (0.3 s thumbnail, 0.5 s embed) as a bound.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)

STAGE_DURATION = Histogram(
    "photo_stage_duration_seconds",
    "Time a stage spent on one photo, by outcome (done, failed, retried).",
    ["stage", "outcome"],
    buckets=_DURATION_BUCKETS,
)
STAGE_OUTCOMES = Counter(
    "photo_stage_outcomes_total",
    "Photos handled by a stage, by outcome and reason (the failure reason; `none` when done).",
    ["stage", "outcome", "reason"],
)
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["app", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["app", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECEIVER_EVENTS_ACCEPTED = Counter(
    "receiver_events_accepted",
    "B2 webhook uploads published to the broker (one per photo), by lane (interactive, bulk).",
    ["lane"],
)
RECEIVER_EVENTS_IGNORED = Counter(
    "receiver_events_ignored",
    "B2 webhook events not published, by reason (not_upload, thumbnail, not_image, "
    "outside_layout, dot_segment, empty_segment, too_long, invalid_character, malformed).",
    ["reason"],
)
RECEIVER_EVENTS_DUPLICATE = Counter(
    "receiver_events_duplicate",
    "B2 webhook events dropped because their eventId was published within the window.",
)
RECEIVER_EVENTS_FAILED = Counter(
    "receiver_events_failed",
    "B2 webhook uploads not accepted, by kind: `transient` (the batch is answered 5xx and B2 "
    "retries it) or `unexpected` (a bug: logged with its traceback, the batch answered by the "
    "other events).",
    ["kind"],
)


def observe_stage(stage: str, outcome: str, reason: str, seconds: float) -> None:
    """Record one photo handled by a stage."""
    STAGE_DURATION.labels(stage, outcome).observe(seconds)
    STAGE_OUTCOMES.labels(stage, outcome, reason).inc()


def exposition(collectors: Iterable[Collector] = ()) -> bytes:
    """Every metric of this process (of all workers, in multiprocess mode) plus `collectors`."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_DIR_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


class RequestMetrics:
    """Counts and times the HTTP requests one app answers.

    The labelled series of each (method, route, status) are looked up once: `labels()` costs
    more than the increment itself, and this runs on every status poll. Each entry is stored
    whole, so a concurrent first request never sees half of it.
    """

    def __init__(self, app_name: str) -> None:
        self._app_name = app_name
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        if key not in self._series:
            self._series[key] = (
                HTTP_REQUESTS.labels(self._app_name, method, route, str(status)),
                HTTP_DURATION.labels(self._app_name, route),
            )
        requests_counter, duration = self._series[key]
        requests_counter.inc()
        duration.observe(seconds)


def instrument(app: Flask, collectors: Iterable[Collector] = ()) -> RequestMetrics:
    """Count and time every request of `app`, and serve `GET /metrics` (with `collectors`).

    Returns the app's request metrics, for requests answered before they reach Flask."""
    collectors = tuple(collectors)
    request_metrics = RequestMetrics(app.name)

    @app.before_request
    def start_timer() -> None:
        g.request_started = request.environ.get(REQUEST_STARTED) or time.perf_counter()

    @app.after_request
    def count_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.request_started
        request_metrics.observe(request.method, route, response.status_code, elapsed)
        return response

    def metrics() -> Response:
        return Response(exposition(collectors), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    return request_metrics
