"""What the admin watches: per stage throughput, latency, backlog, errors and health against
the thresholds in force, and the active users' progress."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from functions.common.pipeline import PIPELINE
from functions.common.status_model import Backlog, PipelineSnapshot, StageSample, UserStatus
from functions.status.thresholds import Thresholds

THROUGHPUT_WINDOW_S = 60.0
# The stages as the dashboard draws them, in order: a user row's `<counted_as>_done` counts,
# and the phase (and its message) of a user waiting for the stage.
PIPELINE_SHOWN = [
    {
        "name": stage.name,
        "label": stage.label,
        "counted_as": stage.counted_as,
        "phase": stage.phase,
        "message": stage.message,
    }
    for stage in PIPELINE
]
PERCENTILES = {"p50": 50, "p95": 95, "p99": 99}


@dataclass(frozen=True)
class StageHealth:
    throughput_per_min: int
    latency_ms: dict[str, float | None]
    pending: int
    oldest_age_s: float | None
    errors_by_reason: dict[str, int]
    error_rate: float
    breaches: dict[str, str]  # threshold key -> what is wrong

    def as_json(self) -> dict[str, Any]:
        return {
            "throughput_per_min": self.throughput_per_min,
            "latency_ms": self.latency_ms,
            "backlog": {"pending": self.pending, "oldest_age_s": self.oldest_age_s},
            "errors_by_reason": self.errors_by_reason,
            "error_rate": self.error_rate,
            "health": "breach" if self.breaches else "ok",
            "breaches": list(self.breaches.values()),
        }


def percentile(values: list[float], rank: float) -> float | None:
    """Nearest-rank percentile of sorted `values`; None when there are none."""
    if not values:
        return None
    return values[max(0, math.ceil(rank / 100 * len(values)) - 1)]


def stage_health(
    samples: list[StageSample], backlog: Backlog, limits: dict[str, float], now: float
) -> StageHealth:
    durations = sorted(s.duration_ms for s in samples if s.duration_ms is not None)
    latency = {name: percentile(durations, rank) for name, rank in PERCENTILES.items()}
    errors: dict[str, int] = {}
    for sample in samples:
        if sample.reason is not None:
            errors[sample.reason] = errors.get(sample.reason, 0) + 1
    oldest_age = None if backlog.oldest_since is None else round(now - backlog.oldest_since, 1)
    breaches = {}
    if latency["p95"] is not None and latency["p95"] > limits["p95_ms"]:
        breaches["p95_ms"] = f"p95 latency {latency['p95']:.0f} ms > {limits['p95_ms']:g} ms"
    if oldest_age is not None and oldest_age > limits["backlog_age_s"]:
        breaches["backlog_age_s"] = (
            f"oldest pending photo waiting {oldest_age:.0f} s > {limits['backlog_age_s']:g} s"
        )
    return StageHealth(
        throughput_per_min=sum(1 for s in samples if s.at >= now - THROUGHPUT_WINDOW_S),
        latency_ms=latency,
        pending=backlog.pending,
        oldest_age_s=oldest_age,
        errors_by_reason=errors,
        error_rate=round(sum(errors.values()) / len(samples), 4) if samples else 0.0,
        breaches=breaches,
    )


def stages_health(snapshot: PipelineSnapshot, thresholds: Thresholds) -> dict[str, StageHealth]:
    return {
        stage: stage_health(
            snapshot.samples[stage], snapshot.backlog[stage], thresholds[stage], snapshot.now
        )
        for stage in PIPELINE.names
    }


def user_row(status: UserStatus) -> dict[str, Any]:
    run = status.run
    return {
        "user_id": status.user_id,
        "phase": status.phase,
        "progress": round(run.progress, 4),
        "uploaded": run.uploaded,
        **{stage.done_counter: run.stages[stage.name].done for stage in PIPELINE},
        "failed": run.failed,
        "eta_s": run.eta_s,
    }


def overview_body(
    snapshot: PipelineSnapshot, thresholds: Thresholds, users_shown: int
) -> dict[str, Any]:
    """The admin overview: users still working first, then the most recently active."""
    users = sorted(snapshot.users, key=lambda pair: (pair[0].phase == "idle", -pair[1]))
    return {
        "generated_at": snapshot.now,
        "pipeline": PIPELINE_SHOWN,
        "stages": {
            stage: health.as_json() for stage, health in stages_health(snapshot, thresholds).items()
        },
        "users": [user_row(status) for status, _ in users[:users_shown]],
        "thresholds": thresholds,
    }
