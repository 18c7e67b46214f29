"""Per-step timings of one photo's processing, reported to the database Lambda and in spans."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from functions.common.telemetry import tracer


class StepTimer:
    """Times each step in milliseconds into `ms`, and runs it in a span of the same name.

    A step that raises is recorded on its span as an error and is not timed.
    """

    def __init__(self, component: str) -> None:
        self._tracer = tracer(component)
        self.ms: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        with self._tracer.start_as_current_span(name):
            yield
        self.ms[name] = round((time.perf_counter() - started) * 1000, 1)
