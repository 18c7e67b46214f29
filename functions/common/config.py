"""Every setting of every component, typed, read from the environment in one place.

Each component reads only its own section (`StorageSettings.from_env()`, ...). The README's
configuration table lists each variable; keep the two in step.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path


def _str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _optional(name: str) -> str | None:
    return os.environ.get(name) or None


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _rgb(name: str, default: str) -> tuple[int, int, int]:
    raw = _str(name, default).lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", raw):
        raise ValueError(f"{name} must be a hex colour like #ffffff, got {raw!r}")
    return (int(raw[0:2], 16), int(raw[2:4], 16), int(raw[4:6], 16))


def _list(name: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _str(name, default).split(",") if item.strip())


@dataclass(frozen=True)
class StorageSettings:
    """The S3-compatible object store (Backblaze B2 in production)."""

    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    connect_timeout_s: float
    read_timeout_s: float
    max_attempts: int

    @classmethod
    def from_env(cls) -> StorageSettings:
        return cls(
            endpoint_url=_optional("S3_ENDPOINT_URL"),
            region=_str("S3_REGION", "us-west-004"),
            access_key_id=_optional("S3_ACCESS_KEY_ID"),
            secret_access_key=_optional("S3_SECRET_ACCESS_KEY"),
            connect_timeout_s=_float("S3_CONNECT_TIMEOUT_S", 3.0),
            read_timeout_s=_float("S3_READ_TIMEOUT_S", 20.0),
            max_attempts=_int("S3_MAX_ATTEMPTS", 3),
        )


@dataclass(frozen=True)
class LambdaSettings:
    """The existing database-update Lambda ("Lambda 2"), invoked synchronously."""

    function_name: str
    endpoint_url: str | None
    region: str
    timeout_s: float
    max_attempts: int

    @classmethod
    def from_env(cls) -> LambdaSettings:
        return cls(
            function_name=_str("DB_LAMBDA_FUNCTION", "photo-db-update"),
            endpoint_url=_optional("DB_LAMBDA_ENDPOINT_URL"),
            region=_str("DB_LAMBDA_REGION", "us-east-1"),
            timeout_s=_float("DB_LAMBDA_TIMEOUT_S", 10.0),
            max_attempts=_int("DB_LAMBDA_MAX_ATTEMPTS", 2),
        )


@dataclass(frozen=True)
class StatusSettings:
    """The Redis status store read by the status function."""

    redis_url: str
    failures_kept: int

    @classmethod
    def from_env(cls) -> StatusSettings:
        return cls(
            redis_url=_str("REDIS_URL", "redis://127.0.0.1:6379/0"),
            failures_kept=_int("STATUS_FAILURES_KEPT", 50),
        )


@dataclass(frozen=True)
class ThumbnailSettings:
    """How thumbnails are made; defaults reproduce the old sharp Lambda."""

    max_width: int = 400
    max_height: int = 400
    quality: int = 80
    background: tuple[int, int, int] = (255, 255, 255)
    key_template: str = "thumbnails/{key_stem}.jpg"
    max_input_bytes: int = 100 * 1024 * 1024
    max_input_pixels: int = 100_000_000

    @property
    def key_prefix(self) -> str:
        """The fixed prefix of every thumbnail key; the receiver ignores keys under it."""
        return self.key_template.split("{", 1)[0]

    @classmethod
    def from_env(cls) -> ThumbnailSettings:
        defaults = cls()
        return cls(
            max_width=_int("THUMBNAIL_MAX_WIDTH", defaults.max_width),
            max_height=_int("THUMBNAIL_MAX_HEIGHT", defaults.max_height),
            quality=_int("THUMBNAIL_QUALITY", defaults.quality),
            background=_rgb("THUMBNAIL_BACKGROUND", "#ffffff"),
            key_template=_str("THUMBNAIL_KEY_TEMPLATE", defaults.key_template),
            max_input_bytes=_int("MAX_INPUT_BYTES", defaults.max_input_bytes),
            max_input_pixels=_int("MAX_INPUT_PIXELS", defaults.max_input_pixels),
        )


@dataclass(frozen=True)
class EmbedSettings:
    """Face detection + recognition; defaults are the production batch job's (buffalo_l)."""

    model_root: Path = Path("/models")
    model_pack: str = "buffalo_l"
    det_size: int = 640
    det_thresh: float = 0.5
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 2
    max_input_bytes: int = 100 * 1024 * 1024
    max_input_pixels: int = 100_000_000

    @property
    def model_dir(self) -> Path:
        return self.model_root / self.model_pack

    @classmethod
    def from_env(cls) -> EmbedSettings:
        defaults = cls()
        return cls(
            model_root=Path(_str("MODEL_ROOT", str(defaults.model_root))),
            model_pack=_str("MODEL_PACK", defaults.model_pack),
            det_size=_int("DET_SIZE", defaults.det_size),
            det_thresh=_float("DET_THRESH", defaults.det_thresh),
            providers=_list("ORT_PROVIDERS", ",".join(defaults.providers)),
            intra_op_threads=_int("ORT_INTRA_OP_THREADS", defaults.intra_op_threads),
            max_input_bytes=_int("MAX_INPUT_BYTES", defaults.max_input_bytes),
            max_input_pixels=_int("MAX_INPUT_PIXELS", defaults.max_input_pixels),
        )


@dataclass(frozen=True)
class ReceiverSettings:
    """The B2 event-notification webhook receiver."""

    signing_secrets: tuple[str, ...]
    sink_url: str
    user_id_pattern: re.Pattern[str]
    image_extensions: frozenset[str]
    thumbnail_prefix: str
    publish_timeout_s: float = field(default=2.0)

    @classmethod
    def from_env(cls) -> ReceiverSettings:
        return cls(
            signing_secrets=_list("B2_WEBHOOK_SECRETS", ""),
            sink_url=_str("K_SINK", "http://127.0.0.1:8080"),
            user_id_pattern=re.compile(_str("USER_ID_PATTERN", r"^(?P<user_id>[^/]+)/")),
            image_extensions=frozenset(
                ext.lower()
                for ext in _list(
                    "IMAGE_EXTENSIONS",
                    "jpg,jpeg,png,webp,heic,heif,avif,tif,tiff,gif,bmp",
                )
            ),
            thumbnail_prefix=ThumbnailSettings.from_env().key_prefix,
            publish_timeout_s=_float("PUBLISH_TIMEOUT_S", 2.0),
        )
