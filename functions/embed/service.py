"""The embed stage: original from the bucket → faces + embeddings → database Lambda."""

from __future__ import annotations

from functions.common.events import PhotoRef
from functions.common.lambda_client import DatabaseLambda
from functions.common.memory_budget import MemoryBudget
from functions.common.stage_app import StageResult
from functions.common.storage import ObjectStore
from functions.common.timing import StepTimer
from functions.embed.decode import decode_peak_bytes, decode_photo
from functions.embed.encoding import embedding_payload
from functions.embed.models import FaceAnalyzer
from functions.embed.settings import EmbedSettings


class EmbedService:
    def __init__(
        self,
        settings: EmbedSettings,
        analyzer: FaceAnalyzer,
        store: ObjectStore,
        database: DatabaseLambda,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._settings = settings
        self._analyzer = analyzer
        self._store = store
        self._database = database
        # One per worker process, shared by its threads.
        self._budget = budget or MemoryBudget.for_process(settings.limits)

    def process(self, photo: PhotoRef) -> StageResult:
        timer = StepTimer("functions.embed")
        with timer.step("download"):
            original = self._store.download(
                photo.bucket, photo.key, photo.version_id, self._settings.limits.max_bytes
            )
        # The decoded pixels are held until the faces are found in them, and freed before the
        # reservation is given back.
        with self._budget.reserve(decode_peak_bytes(original, self._settings)):
            with timer.step("decode"):
                decoded = decode_photo(original, self._settings)
            with timer.step("analyze"):
                faces = self._analyzer.analyze_photo(decoded)
            size = (decoded.width, decoded.height)
            del decoded
        with timer.step("lambda"):
            self._database.invoke(embedding_payload(photo, self._settings, size, faces, timer.ms))
        return StageResult(data={"faces": len(faces), "timings_ms": timer.ms}, faces=len(faces))
