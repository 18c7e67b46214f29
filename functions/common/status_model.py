"""What a user's status and the pipeline's health are, independent of where they are stored.

A run starts when a photo arrives (or an upload is declared) while the user's previous run is
finished, and is finished when every photo of it, including photos declared but not yet
arrived, has ended (done at the last stage, or failed at any stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from functions.common.pipeline import IDLE_PHASE, PIPELINE


@dataclass(frozen=True)
class StageCounts:
    """Photos a stage finished: done, or failed for good."""

    done: int = 0
    failed: int = 0


def _pending(photos: int, stages: Mapping[str, StageCounts]) -> dict[str, int]:
    """Photos each stage still owes: those the stage before it passed on (every photo, for
    the first), less those it finished either way."""
    pending, owed = {}, photos
    for stage in PIPELINE:
        counts = stages.get(stage.name, StageCounts())
        pending[stage.name] = max(0, owed - counts.done - counts.failed)
        owed = counts.done
    return pending


def _counts(
    uploaded: int, stages: Mapping[str, StageCounts], photos: int, faces: int
) -> dict[str, int]:
    """The status body's counts: uploaded, each stage's done, failed and pending, faces."""
    pending = _pending(photos, stages)
    counts = {"uploaded": uploaded}
    for stage in PIPELINE:
        finished = stages.get(stage.name, StageCounts())
        counts[stage.done_counter] = finished.done
        counts[stage.failed_counter] = finished.failed
        counts[stage.pending_counter] = pending[stage.name]
    return counts | {"faces": faces}


@dataclass(frozen=True)
class RunStatus:
    """The user's current (or latest) run as read from the store: counts, progress and ETA."""

    started_at: float | None
    expected: int
    uploaded: int
    stages: Mapping[str, StageCounts] = field(default_factory=dict)
    faces: int = 0
    # Times of the run's newest stage completions, newest first: at most `eta_window` of
    # them, and one more that marks where that window starts.
    completions: tuple[float, ...] = ()
    eta_window: int = 20

    @property
    def photos(self) -> int:
        """Photos the run is waiting for: those arrived, or more if more were declared."""
        return max(self.uploaded, self.expected)

    @property
    def pending(self) -> dict[str, int]:
        """Photos each stage still owes the run, by stage name."""
        return _pending(self.photos, self.stages)

    @property
    def counts(self) -> dict[str, int]:
        return _counts(self.uploaded, self.stages, self.photos, self.faces)

    @property
    def failed(self) -> int:
        return sum(counts.failed for counts in self.stages.values())

    @property
    def finished(self) -> bool:
        return not any(self.pending.values())

    @property
    def work_total(self) -> int:
        """Stage completions the run needs: each stage, every photo no stage before it failed."""
        total, failed_before = 0, 0
        for stage in PIPELINE:
            total += self.photos - failed_before
            failed_before += self.stages.get(stage.name, StageCounts()).failed
        return total

    @property
    def work_done(self) -> int:
        return sum(counts.done + counts.failed for counts in self.stages.values())

    @property
    def progress(self) -> float:
        """Fraction of the run's work done; 1.0 when nothing is left to do."""
        if self.work_total <= 0:
            return 1.0
        return min(1.0, self.work_done / self.work_total)

    @property
    def eta_s(self) -> float | None:
        """Seconds left, as of the newest completion, at the rate of the newest completions
        (from just before the oldest of them, or the run's start); None until one completed.

        It changes only when the run does, so an unchanged status keeps its ETag between
        polls; a front end counts down from it.
        """
        remaining = self.work_total - self.work_done
        if remaining <= 0:
            return 0.0
        if not self.completions or self.started_at is None:
            return None
        if len(self.completions) > self.eta_window:
            count, since = self.eta_window, self.completions[self.eta_window]
        else:
            count, since = len(self.completions), self.started_at
        elapsed = max(self.completions[0] - since, 1e-3)
        return round(remaining * elapsed / count, 1)


@dataclass(frozen=True)
class UserStatus:
    """What the status function returns for one user."""

    user_id: str
    uploaded: int
    stages: Mapping[str, StageCounts]
    faces: int
    timestamps: dict[str, float]
    failures: list[dict[str, Any]]
    run: RunStatus

    @property
    def counts(self) -> dict[str, int]:
        """Lifetime counts, as the status body's `counts`."""
        return _counts(self.uploaded, self.stages, self.uploaded, self.faces)

    @property
    def phase(self) -> str:
        """The phase of the first stage the run still waits for; idle when it waits for none."""
        pending = self.run.pending
        return next((stage.phase for stage in PIPELINE if pending[stage.name]), IDLE_PHASE)


@dataclass(frozen=True)
class StageSample:
    """One photo's completion of a stage: when, how long it took (unknown for dead letters),
    and its failure reason (None when it succeeded)."""

    at: float
    duration_ms: float | None
    reason: str | None


@dataclass(frozen=True)
class Backlog:
    """Photos waiting for a stage, and since when the oldest of them has waited."""

    pending: int = 0
    oldest_since: float | None = None

    def add(self, pending: int, oldest_since: float | None) -> Backlog:
        candidates = [t for t in (self.oldest_since, oldest_since) if t is not None]
        return Backlog(self.pending + pending, min(candidates) if candidates else None)


@dataclass(frozen=True)
class PipelineSnapshot:
    """Everything the admin overview shows, read from Redis at one moment."""

    now: float
    users: list[tuple[UserStatus, float]]  # with each user's latest activity, newest first
    backlog: dict[str, Backlog]
    samples: dict[str, list[StageSample]]
    thresholds: dict[str, dict[str, float]]  # admin overrides only
    # Redis's used memory and its `maxmemory` (0: unbounded), in bytes.
    memory_used: int = 0
    memory_max: int = 0
