"""The sweeper: ends photos whose events were lost, so no user's status spins forever.

An event can be lost for good (an in-memory broker restarted, the dead-letter sink was down
when the broker gave up). Every replica of the status function runs a sweeper thread; a Redis
lock lets one sweep per interval (PhotoStore.sweep), which fails each photo that waited longer
than PENDING_DEADLINE_S for a stage as `timed_out`. A photo that completes after all is
recorded as done: the sweep is undone.
"""

from __future__ import annotations

import logging
import random
import threading

from functions.common.errors import TransientError
from functions.common.photo_store import PhotoStore

log = logging.getLogger(__name__)


class Sweeper:
    """Sweeps `store` every `interval_s` (with jitter, so replicas spread out) on a daemon
    thread, until `stop()`."""

    def __init__(self, store: PhotoStore, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval_s * random.uniform(0.5, 1.0)):
            try:
                swept = self._store.sweep()
            except TransientError as exc:
                log.warning("sweep skipped: %s", exc)
                continue
            if swept:
                log.info("sweeper failed %d photos pending past the deadline", swept)
