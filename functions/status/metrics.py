"""Stage health as Prometheus gauges, computed from Redis at scrape time.

Every status pod reads the same Redis, so each exports the same values; alert rules take the
max over pods (knative/alerts/prometheus-rules.yaml).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from functions.common.errors import TransientError
from functions.common.pipeline import THRESHOLD_KEYS
from functions.common.status_model import PipelineSnapshot
from functions.status.overview import PERCENTILES, StageHealth, stages_health
from functions.status.thresholds import Thresholds

log = logging.getLogger(__name__)


class StageHealthCollector(Collector):
    def __init__(
        self,
        read: Callable[[], tuple[PipelineSnapshot, Thresholds]],
        max_age_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`read` returns a fresh snapshot and the thresholds in force. A snapshot reads every
        active user, and /metrics is reachable from outside: scrapes within `max_age_s` of a
        read reuse it, so scraping in a loop cannot load Redis."""
        self._read = read
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, tuple[PipelineSnapshot, Thresholds]] | None = None

    def _recent_read(self) -> tuple[PipelineSnapshot, Thresholds]:
        with self._lock:
            now = self._clock()
            if self._last is None or now - self._last[0] >= self._max_age_s:
                self._last = (now, self._read())
            return self._last[1]

    def collect(self) -> Iterator[Metric]:
        store_up = GaugeMetricFamily(
            "photo_status_store_up", "1 when the status store (Redis) answered this scrape."
        )
        try:
            snapshot, thresholds = self._recent_read()
        except TransientError as exc:
            log.warning("stage health not exported: %s", exc)
            store_up.add_metric([], 0)
            yield store_up
            return
        store_up.add_metric([], 1)
        yield store_up
        yield from _memory_families(snapshot)
        yield from _stage_families(stages_health(snapshot, thresholds), thresholds)


def _memory_families(snapshot: PipelineSnapshot) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily(
        "photo_status_store_memory_used_bytes",
        "Memory the status store (Redis) uses.",
        value=snapshot.memory_used,
    )
    yield GaugeMetricFamily(
        "photo_status_store_memory_max_bytes",
        "The status store's maxmemory (0 when unbounded); writes fail past it.",
        value=snapshot.memory_max,
    )


def _stage_families(
    health: dict[str, StageHealth], thresholds: Thresholds
) -> Iterator[GaugeMetricFamily]:
    breach = GaugeMetricFamily(
        "photo_stage_threshold_breach",
        "1 while a stage is beyond an admin threshold (p95_ms, backlog_age_s).",
        labels=["stage", "threshold"],
    )
    limit = GaugeMetricFamily(
        "photo_stage_threshold",
        "The threshold in force (milliseconds for p95_ms, seconds for backlog_age_s).",
        labels=["stage", "threshold"],
    )
    latency = GaugeMetricFamily(
        "photo_stage_latency_ms",
        "Stage latency percentile over the sliding window, in milliseconds.",
        labels=["stage", "quantile"],
    )
    pending = GaugeMetricFamily(
        "photo_stage_backlog_pending", "Photos waiting for the stage.", labels=["stage"]
    )
    oldest = GaugeMetricFamily(
        "photo_stage_backlog_oldest_age_seconds",
        "How long the oldest photo waiting for the stage has waited (0 when none waits).",
        labels=["stage"],
    )
    throughput = GaugeMetricFamily(
        "photo_stage_throughput_per_minute",
        "Photos the stage completed in the last minute.",
        labels=["stage"],
    )
    for stage, stage_health in health.items():
        for key in THRESHOLD_KEYS:
            breach.add_metric([stage, key], 1 if key in stage_health.breaches else 0)
            limit.add_metric([stage, key], thresholds[stage][key])
        for name, rank in PERCENTILES.items():
            value = stage_health.latency_ms[name]
            if value is not None:
                latency.add_metric([stage, f"{rank / 100:g}"], value)
        pending.add_metric([stage], stage_health.pending)
        oldest.add_metric([stage], stage_health.oldest_age_s or 0.0)
        throughput.add_metric([stage], stage_health.throughput_per_min)
    yield from (breach, limit, latency, pending, oldest, throughput)
