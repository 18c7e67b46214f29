"""The thumbnail stage's settings (the shared ones are in functions/common/config.py)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from functions.common.config import (
    THUMBNAIL_KEY_TEMPLATE,
    InputLimits,
    Int,
    Rgb,
    Settings,
    env,
    fixed_prefix,
)


class ThumbnailSettings(Settings):
    """How thumbnails are made; defaults reproduce the old sharp Lambda."""

    max_width: Int = env("THUMBNAIL_MAX_WIDTH", 400, "width of the box the thumbnail fits inside")
    max_height: Int = env(
        "THUMBNAIL_MAX_HEIGHT", 400, "height of the box the thumbnail fits inside"
    )
    quality: Int = env("THUMBNAIL_QUALITY", 80, "JPEG quality")
    background: Rgb = env(
        "THUMBNAIL_BACKGROUND",
        (255, 255, 255),
        "colour transparent pixels are flattened onto",
        doc_default="`#ffffff`",
    )
    key_template: str = env(
        "THUMBNAIL_KEY_TEMPLATE",
        THUMBNAIL_KEY_TEMPLATE,
        "thumbnail key; `{key}`, `{key_stem}`, `{user_id}`, filled with the exact key; its fixed "
        "prefix, which must not be empty, is ignored by the receiver (loop guard); a result over "
        "B2's 1024-byte key limit becomes `<prefix>_long/<sha256 hex of the key>.jpg` (see "
        "[payloads.md](payloads.md))",
    )
    limits: InputLimits = Field(
        default_factory=InputLimits, description="the input limits (InputLimits)"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.key_prefix:
            raise ValueError(
                "THUMBNAIL_KEY_TEMPLATE must start with a fixed prefix such as `thumbnails/`: "
                "the receiver ignores keys under it, or every thumbnail written back would be "
                f"thumbnailed again; got {self.key_template!r}"
            )
        return self

    @property
    def key_prefix(self) -> str:
        """The fixed prefix of every thumbnail key; the receiver ignores keys under it."""
        return fixed_prefix(self.key_template)
