"""The thumbnail stage: original from the bucket → thumbnail → bucket → database Lambda."""

from __future__ import annotations

import hashlib
import posixpath

from functions.common.events import MAX_KEY_BYTES, PhotoRef, lambda_payload
from functions.common.lambda_client import DatabaseLambda
from functions.common.memory_budget import MemoryBudget
from functions.common.pipeline import PIPELINE
from functions.common.stage_app import StageResult
from functions.common.storage import ObjectStore
from functions.common.timing import StepTimer
from functions.thumbnail.imaging import make_thumbnail, thumbnail_peak_bytes
from functions.thumbnail.settings import ThumbnailSettings


def thumbnail_key(template: str, photo: PhotoRef) -> str:
    """Where the photo's thumbnail goes: `template` filled with the photo's key, exactly as
    uploaded (any UTF-8, spaces, `%`, `+`, emoji, NFC or NFD: different keys, different
    thumbnails). When that would be over B2's 1024-byte key limit it is
    `<prefix>_long/<sha256 hex of the key's UTF-8>.jpg` instead (`thumbnails/_long/….jpg` by
    default): still under the template's fixed prefix, which the receiver ignores, and with
    the default template never another photo's thumbnail key (that photo would be named
    `_long/<hex>`, without an image extension)."""
    stem, _ = posixpath.splitext(photo.key)
    key = template.format(key=photo.key, key_stem=stem, user_id=photo.user_id)
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    digest = hashlib.sha256(photo.key.encode()).hexdigest()
    return f"{ThumbnailSettings(key_template=template).key_prefix}_long/{digest}.jpg"


class ThumbnailService:
    def __init__(
        self,
        settings: ThumbnailSettings,
        store: ObjectStore,
        database: DatabaseLambda,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._database = database
        # One per worker process, shared by its threads.
        self._budget = budget or MemoryBudget.for_process(settings.limits)

    def process(self, photo: PhotoRef) -> StageResult:
        timer = StepTimer("functions.thumbnail")
        with timer.step("download"):
            original = self._store.download(
                photo.bucket, photo.key, photo.version_id, self._settings.limits.max_bytes
            )
        with (
            timer.step("resize"),
            self._budget.reserve(thumbnail_peak_bytes(original, self._settings)),
        ):
            thumbnail = make_thumbnail(original, self._settings)
        key = thumbnail_key(self._settings.key_template, photo)
        with timer.step("upload"):
            self._store.upload(photo.bucket, key, thumbnail.data, thumbnail.content_type)
        result = {
            "size": len(original),
            "source_format": thumbnail.source_format,
            "original": {"width": thumbnail.original_width, "height": thumbnail.original_height},
            "thumbnail": {
                "key": key,
                "bytes": len(thumbnail.data),
                "width": thumbnail.width,
                "height": thumbnail.height,
                "content_type": thumbnail.content_type,
            },
        }
        with timer.step("lambda"):
            self._database.invoke(
                lambda_payload(
                    PIPELINE["thumbnail"].created,
                    photo,
                    content_type=thumbnail.source_content_type,
                    **result,
                    timings_ms=timer.ms,
                )
            )
        return StageResult(data={**result, "timings_ms": timer.ms})
