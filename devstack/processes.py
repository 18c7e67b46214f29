"""CPU time, resident memory and children of processes, read from Linux's /proc (benchmarks,
soak)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system, since each process started
    rss_bytes: int


def _stats() -> Iterator[tuple[int, list[str]]]:
    """Each running process's id and the fields of its /proc stat after the command name
    (so fields[1] is its parent's id)."""
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        yield int(stat_path.parent.name), fields


def usage_with_children(root_pid: int) -> Usage:
    """The process and its direct children (gunicorn's master and workers) together."""
    cpu_ticks = rss_pages = 0
    for pid, fields in _stats():
        if root_pid in (pid, int(fields[1])):
            cpu_ticks += int(fields[11]) + int(fields[12])
            rss_pages += int(fields[21])
    return Usage(cpu_ticks / _CLOCK_TICKS, rss_pages * _PAGE_BYTES)


def children(parent_pid: int) -> list[int]:
    """The ids of the process's direct children (a gunicorn master's workers), in order."""
    return sorted(pid for pid, fields in _stats() if int(fields[1]) == parent_pid)
