"""How much memory the photos being decoded in one process may take together.

Each photo reserves its estimated peak (read from its header) before its pixels are decoded and
gives it back once it is done with them. A photo that fits waits its turn, first come first
served, so that a large photo is not passed over by a stream of small ones; one that could never
fit fails for good. The kernel kills a pod over its memory limit and the broker redelivers what
it was processing, to be killed again: waiting, or failing the one photo, is better.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from functions.common.config import InputLimits
from functions.common.errors import PermanentError, TransientError

MIB = 1024 * 1024
# Waiting longer would outlast the thumbnail Trigger's 60 s delivery timeout together with the
# decoding itself; the broker redelivers a photo that timed out here (TransientError).
DEFAULT_WAIT_S = 20.0


class MemoryBudget:
    """`total_bytes` shared by the threads of one process; thread-safe."""

    def __init__(self, total_bytes: int, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.total_bytes = total_bytes
        self._wait_s = wait_s
        self._reserved = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @classmethod
    def for_process(cls, limits: InputLimits) -> MemoryBudget:
        return cls(limits.process_memory_budget_bytes)

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Holds `nbytes` of the budget for the block, once the photos reserving before it are
        in and the rest of the budget has room. PermanentError "too_large" when `nbytes` is over
        the whole budget, TransientError when there is no room after the wait."""
        if nbytes > self.total_bytes:
            raise PermanentError(
                "too_large",
                f"decoding needs {_mib(nbytes)} MiB, over the budget of {_mib(self.total_bytes)} "
                "MiB (DECODE_MEMORY_BUDGET_MB shared by the WEB_CONCURRENCY workers)",
            )
        self._acquire(nbytes)
        try:
            yield
        finally:
            with self._changed:
                self._reserved -= nbytes
                self._changed.notify_all()

    def _acquire(self, nbytes: int) -> None:
        turn = object()
        with self._changed:
            self._queue.append(turn)
            try:
                admitted = self._changed.wait_for(
                    lambda: self._queue[0] is turn and self._reserved + nbytes <= self.total_bytes,
                    timeout=self._wait_s,
                )
            finally:
                self._queue.remove(turn)
                # The next in line may fit now, or is first in line now.
                self._changed.notify_all()
            if not admitted:
                raise TransientError(
                    f"no memory to decode in {self._wait_s:g} s: needs {_mib(nbytes)} MiB, "
                    f"{_mib(self._reserved)} of {_mib(self.total_bytes)} MiB in use"
                )
            self._reserved += nbytes


def _mib(nbytes: int) -> int:
    return -(-nbytes // MIB)
