"""Where a benchmark leaves its key numbers for other tools (`make capacity` reads the stages'
CPU-seconds per photo): var/bench/<name>.json, overwritten by each run."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "var" / "bench"


def write_result(name: str, fields: dict[str, Any], directory: Path = RESULTS) -> Path:
    """Store `fields` as this machine's latest `name` result, dated."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    record = {"date": time.strftime("%Y-%m-%d"), "machine": _machine(), **fields}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_result(name: str, directory: Path = RESULTS) -> dict[str, Any] | None:
    """The latest `name` result on this machine; None when no run wrote one."""
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    return f"{cpus} vCPU {platform.machine()}"
