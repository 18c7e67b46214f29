"""The embed stage: original from the bucket → faces + embeddings → database Lambda."""

from __future__ import annotations

from typing import Any

from functions.common.config import EmbedSettings
from functions.common.events import PhotoRef
from functions.common.lambda_client import DatabaseLambda
from functions.common.stage_app import StageResult
from functions.common.storage import ObjectStore
from functions.common.timing import StepTimer
from functions.embed.decode import decode_photo
from functions.embed.encoding import face_to_payload
from functions.embed.models import FaceAnalyzer


class EmbedService:
    def __init__(
        self,
        settings: EmbedSettings,
        analyzer: FaceAnalyzer,
        store: ObjectStore,
        database: DatabaseLambda,
    ) -> None:
        self._settings = settings
        self._analyzer = analyzer
        self._store = store
        self._database = database

    def process(self, photo: PhotoRef, event_data: dict[str, Any]) -> StageResult:
        timer = StepTimer("functions.embed")
        with timer.step("download"):
            original = self._store.download(
                photo.bucket, photo.key, photo.version_id, self._settings.max_input_bytes
            )
        with timer.step("decode"):
            image = decode_photo(original, self._settings)
        with timer.step("analyze"):
            faces = self._analyzer.analyze(image)
        with timer.step("lambda"):
            self._database.invoke(
                {
                    "event": "embedding.created",
                    "bucket": photo.bucket,
                    "key": photo.key,
                    "version_id": photo.version_id,
                    "user_id": photo.user_id,
                    "model": {
                        "pack": self._settings.model_pack,
                        "det_size": self._settings.det_size,
                        "det_thresh": self._settings.det_thresh,
                        "embedding": "float32-raw-base64",
                    },
                    "image": {"width": image.shape[1], "height": image.shape[0]},
                    "faces": [face_to_payload(face) for face in faces],
                    "timings_ms": timer.ms,
                }
            )
        return StageResult(data={"faces": len(faces), "timings_ms": timer.ms}, faces=len(faces))
