"""The admin's acceptable delay per stage: validation of a change, and the values in force."""

from __future__ import annotations

import math
from typing import Any

from functions.common.pipeline import PIPELINE, THRESHOLD_KEYS

# Far above any sensible delay; keeps a typo from disabling an alert for good.
MAX_THRESHOLD = 1e9

Thresholds = dict[str, dict[str, float]]


def validate_change(body: Any) -> Thresholds:
    """A partial thresholds document, checked; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("thresholds must be a JSON object keyed by stage")
    change: Thresholds = {}
    for stage, values in body.items():
        if stage not in PIPELINE.names:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(PIPELINE.names)}")
        if not isinstance(values, dict):
            raise ValueError(f"{stage}: must be an object with {', '.join(THRESHOLD_KEYS)}")
        for key, value in values.items():
            if key not in THRESHOLD_KEYS:
                known = ", ".join(THRESHOLD_KEYS)
                raise ValueError(f"{stage}: unknown threshold {key!r}; thresholds are {known}")
            change.setdefault(stage, {})[key] = _positive_number(f"{stage}.{key}", value)
    return change


def in_force(defaults: Thresholds, overrides: Thresholds) -> Thresholds:
    """The defaults with an admin's overrides applied (unknown stored keys ignored)."""
    return {
        stage: {key: overrides.get(stage, {}).get(key, default) for key, default in values.items()}
        for stage, values in defaults.items()
    }


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_THRESHOLD):
        raise ValueError(f"{name} must be greater than 0 and at most {MAX_THRESHOLD:g}")
    return float(value)
