"""CPU time and resident memory of process trees, read from Linux's /proc (benchmarks, soak)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system, since each process started
    rss_bytes: int


def usage_with_children(root_pid: int) -> Usage:
    """The process and its direct children (gunicorn's master and workers) together."""
    cpu_ticks = rss_pages = 0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid, parent = int(stat_path.parent.name), int(fields[1])
        if root_pid in (pid, parent):
            cpu_ticks += int(fields[11]) + int(fields[12])
            rss_pages += int(fields[21])
    return Usage(cpu_ticks / _CLOCK_TICKS, rss_pages * _PAGE_BYTES)
