"""The pipeline as data: pipeline.toml's stages, checked, and what follows from them.

`PIPELINE` is the table; `PhotoState` the states a photo can be in (uploaded, then done or
failed at each stage). A photo moves forward only: to a stage's state from `uploaded` or
from the state of any stage before it, so a duplicate or late delivery never counts twice.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from functions.common.events import OBJECT_CREATED

TABLE = Path(__file__).with_name("pipeline.toml")
UPLOADED = "uploaded"
# The admin's acceptable delays, each stage's defaults in the table.
THRESHOLD_KEYS = ("p95_ms", "backlog_age_s")
IDLE_PHASE = "idle"


class Stage(BaseModel):
    """One row of pipeline.toml (its header comment says what each field is)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    trigger: str
    done: str
    failed: str
    created: str
    failed_event: str
    counted_as: str
    phase: str
    message: str
    label: str
    thresholds: dict[str, float]

    @model_validator(mode="after")
    def _check(self) -> Stage:
        if tuple(self.thresholds) != THRESHOLD_KEYS:
            raise ValueError(f"{self.name}: thresholds must be {', '.join(THRESHOLD_KEYS)}")
        return self

    @property
    def done_counter(self) -> str:
        return f"{self.counted_as}_done"

    @property
    def failed_counter(self) -> str:
        return f"{self.counted_as}_failed"

    @property
    def pending_counter(self) -> str:
        return f"{self.counted_as}_pending"

    @property
    def finished_at(self) -> str:
        """The user's timestamp of the stage's latest completion, e.g. `last_thumbnail_at`."""
        return f"last_{self.done}_at"


class Pipeline:
    """The stages in order, looked up by name, by state or by the event that triggers them."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        self.stages = stages
        self._by_name = {stage.name: stage for stage in stages}
        self._by_state = {state: stage for stage in stages for state in (stage.done, stage.failed)}
        self._check()

    @classmethod
    def from_toml(cls, text: str) -> Pipeline:
        return cls(tuple(Stage(**row) for row in tomllib.loads(text)["stage"]))

    def _check(self) -> None:
        if not self.stages:
            raise ValueError("the pipeline needs at least one stage")
        names = [stage.name for stage in self.stages]
        for what, values in (("stage name", names), ("state", self.states)):
            if len(set(values)) != len(values):
                raise ValueError(f"each {what} must be unique: {values}")
        expected = OBJECT_CREATED
        for stage in self.stages:
            if stage.trigger != expected:
                raise ValueError(f"{stage.name}: trigger must be {expected!r}, the event before it")
            expected = stage.created

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, name: str) -> Stage:
        return self._by_name[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def states(self) -> tuple[str, ...]:
        """Every state in order: uploaded, then each stage's done and failed."""
        return (UPLOADED, *(state for stage in self.stages for state in (stage.done, stage.failed)))

    def index(self, stage: Stage) -> int:
        return self.stages.index(stage)

    def stage_of(self, state: str) -> Stage | None:
        """The stage whose work `state` ends; None for `uploaded`."""
        return self._by_state.get(state)

    def predecessor(self, stage: Stage) -> Stage | None:
        index = self.index(stage)
        return self.stages[index - 1] if index else None

    def is_final(self, state: str) -> bool:
        """True when a photo in `state` goes no further: failed, or done with the last stage."""
        stage = self.stage_of(state)
        return stage is not None and (state == stage.failed or stage is self.stages[-1])

    def succeeded(self, state: str) -> tuple[Stage, ...]:
        """The stages a photo in `state` went through successfully, in order."""
        stage = self.stage_of(state)
        if stage is None:
            return ()
        index = self.index(stage)
        return self.stages[: index if state == stage.failed else index + 1]

    def entered_from(self, state: str) -> tuple[str, ...]:
        """The states a photo may be in to move to `state` ('' when it was never seen)."""
        if state == UPLOADED:
            return ("",)
        stage = self.stage_of(state)
        if stage is None:
            raise KeyError(state)
        earlier = [done.done for done in self.stages[: self.index(stage)]]
        return ("", UPLOADED, *earlier)

    def dead_letter_stages(self, event_type: str) -> tuple[Stage, ...]:
        """The stages an undeliverable `event_type` can fail a photo at, first the one it was
        meant for: a photo whose reply was lost further on (its stage did finish) fails later."""
        for index, stage in enumerate(self.stages):
            if stage.trigger == event_type:
                return self.stages[index:]
        raise KeyError(f"no stage is triggered by {event_type!r}")

    def default_thresholds(self) -> dict[str, dict[str, float]]:
        return {stage.name: dict(stage.thresholds) for stage in self.stages}

    def messages(self) -> dict[str, str]:
        """What the front end shows in each phase."""
        return {stage.phase: stage.message for stage in self.stages} | {IDLE_PHASE: ""}


PIPELINE = Pipeline.from_toml(TABLE.read_text())

# Where a photo is: uploaded, or done or failed at a stage (PhotoState.THUMBNAIL_FAILED, ...).
PhotoState = StrEnum("PhotoState", {state.upper(): state for state in PIPELINE.states})  # type: ignore[misc]
