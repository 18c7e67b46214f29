"""Log lines for operators: one JSON object per line on stdout, from every process.

Each line has `time` (ISO 8601 UTC, milliseconds), `level`, `logger` and `message`; `user` and
`key` while a photo is being handled (`photo_context`); `trace_id` and `span_id` while a span
is current; an exception's traceback as `exc_info`, inside the same line. The functions get it
through gunicorn's `logconfig_dict` (gunicorn_conf.py), so gunicorn's own error and access lines
are JSON too; other processes call `configure_logging`. LOG_LEVEL sets the level (default info).
"""

from __future__ import annotations

import logging
import logging.config
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id
from pythonjsonlogger.json import JsonFormatter

_photo: ContextVar[tuple[str, str] | None] = ContextVar("photo", default=None)


@contextmanager
def photo_context(user: str, key: str) -> Iterator[None]:
    """Name the photo being handled (its user and key) on every line logged inside."""
    token = _photo.set((user, key))
    try:
        yield
    finally:
        _photo.reset(token)


class ContextFilter(logging.Filter):
    """Adds the current photo's `user` and `key` and the current span's ids to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        photo = _photo.get()
        if photo is not None:
            record.user, record.key = photo
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format_trace_id(span.trace_id)
            record.span_id = format_span_id(span.span_id)
        return True


class JsonLineFormatter(JsonFormatter):
    """`time`, `level`, `logger`, `message`, then whatever the record carries besides."""

    def __init__(self, **kwargs: Any) -> None:
        renames = {"levelname": "level", "name": "logger"}
        super().__init__(["levelname", "name", "message"], rename_fields=renames, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        created = datetime.fromtimestamp(record.created, UTC)
        log_data["time"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)


def logging_config(level: str | None = None) -> dict[str, Any]:
    """The `logging.config.dictConfig` of every process: JSON lines on stdout for the root
    logger and gunicorn's. gunicorn's access lines only with ACCESS_LOG=1, as before."""
    level = (level or os.environ.get("LOG_LEVEL") or "info").upper()
    access_level = "INFO" if os.environ.get("ACCESS_LOG") == "1" else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"json": {"()": JsonLineFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": access_level, "handlers": ["stdout"], "propagate": False},
        },
    }


def configure_logging() -> None:
    """JSON lines on stdout for a process not served by gunicorn; Python's warnings too."""
    logging.config.dictConfig(logging_config())
    logging.captureWarnings(True)
