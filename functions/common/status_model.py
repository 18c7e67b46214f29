"""What a user's status and the pipeline's health are, independent of where they are stored.

A run starts when a photo arrives (or an upload is declared) while the user's previous run is
finished, and is finished when every photo of it, including photos declared but not yet
arrived, has ended (embedded, or failed at either stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _left(expected: int, done: int, failed: int) -> int:
    """Photos a stage still owes: expected, less those it finished either way."""
    return max(0, expected - done - failed)


@dataclass(frozen=True)
class RunStatus:
    """The user's current (or latest) run as read from the store: counts, progress and ETA."""

    started_at: float | None
    expected: int
    uploaded: int
    thumbnails_done: int
    thumbnails_failed: int
    embeddings_done: int
    embeddings_failed: int
    faces: int
    # Times of the run's newest stage completions, newest first: at most `eta_window` of
    # them, and one more that marks where that window starts.
    completions: tuple[float, ...] = ()
    eta_window: int = 20

    @property
    def photos(self) -> int:
        """Photos the run is waiting for: those arrived, or more if more were declared."""
        return max(self.uploaded, self.expected)

    @property
    def thumbnails_pending(self) -> int:
        return _left(self.photos, self.thumbnails_done, self.thumbnails_failed)

    @property
    def embeddings_pending(self) -> int:
        return _left(self.thumbnails_done, self.embeddings_done, self.embeddings_failed)

    @property
    def finished(self) -> bool:
        return not (self.thumbnails_pending or self.embeddings_pending)

    @property
    def work_total(self) -> int:
        """Stage completions the run needs: a thumbnail per photo, an embedding per thumbnail."""
        return 2 * self.photos - self.thumbnails_failed

    @property
    def work_done(self) -> int:
        return (
            self.thumbnails_done
            + self.thumbnails_failed
            + self.embeddings_done
            + self.embeddings_failed
        )

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
    thumbnails_done: int
    thumbnails_failed: int
    embeddings_done: int
    embeddings_failed: int
    faces: int
    timestamps: dict[str, float]
    failures: list[dict[str, Any]]
    run: RunStatus

    @property
    def thumbnails_pending(self) -> int:
        return _left(self.uploaded, self.thumbnails_done, self.thumbnails_failed)

    @property
    def embeddings_pending(self) -> int:
        return _left(self.thumbnails_done, self.embeddings_done, self.embeddings_failed)

    @property
    def phase(self) -> str:
        if self.run.thumbnails_pending:
            return "processing"
        if self.run.embeddings_pending:
            return "indexing"
        return "idle"


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
