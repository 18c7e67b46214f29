"""Face detection and recognition with insightface's model classes, run as FaceAnalysis runs
them, but loaded from a local pack only (FaceAnalysis would download a missing pack)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from insightface.model_zoo.model_zoo import ModelRouter
from insightface.utils import face_align

from functions.common.config import EmbedSettings
from functions.embed import runtime


class ModelPackError(RuntimeError):
    """The model pack is missing or lacks a model the function needs; raised at start-up."""


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]  # 5 points: eyes, nose, mouth corners
    embedding: np.ndarray  # float32[512], raw (not normalised), as insightface's face.embedding


def load_task_model(settings: EmbedSettings, taskname: str) -> Any:
    """The pack's first model, in file-name order, that insightface routes to `taskname`.

    FaceAnalysis picks its models the same way. `model_zoo.get_model` would drop our session
    options, so this calls its ModelRouter, which passes them on to onnxruntime.
    """
    model_dir = settings.model_dir
    if not model_dir.is_dir():
        raise ModelPackError(f"model pack {model_dir} does not exist")
    for path in sorted(model_dir.glob("*.onnx")):
        model = _route(path, settings)
        if model is not None and model.taskname == taskname:
            return model
    raise ModelPackError(f"model pack {model_dir} has no {taskname} model")


def _route(path: Path, settings: EmbedSettings) -> Any:
    return ModelRouter(str(path)).get_model(
        providers=runtime.providers(settings),
        sess_options=runtime.session_options(settings),
    )


class InferenceModel(ABC):
    """One model task: `load()` once at start-up, then `predict()` per photo."""

    taskname: ClassVar[str]

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        self._model: Any = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self.loaded:
            return
        model = load_task_model(self.settings, self.taskname)
        self._prepare(model)
        self._model = model

    def predict(self, *inputs: Any) -> Any:
        self.load()
        return self._predict(*inputs)

    @abstractmethod
    def _prepare(self, model: Any) -> None: ...

    @abstractmethod
    def _predict(self, *inputs: Any) -> Any: ...


class FaceDetector(InferenceModel):
    """SCRFD: a BGR photo to boxes [n, 5] (x1, y1, x2, y2, score) and landmarks [n, 5, 2]."""

    taskname = "detection"

    def _prepare(self, model: Any) -> None:
        if not model.use_kps:
            raise ModelPackError(f"detection model {model.model_file} has no landmarks output")
        size = self.settings.det_size
        # ctx_id=0 keeps the session's providers; -1 would rebuild the session on CPU.
        model.prepare(ctx_id=0, input_size=(size, size), det_thresh=self.settings.det_thresh)

    def _predict(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._model.detect(image_bgr)


class FaceRecognizer(InferenceModel):
    """ArcFace: a BGR photo and its faces' landmarks [n, 5, 2] to embeddings [n, 512]."""

    taskname = "recognition"

    def _prepare(self, model: Any) -> None:
        model.prepare(ctx_id=0)

    def _predict(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        if len(landmarks) == 0:
            return np.empty((0, self._model.output_shape[1]), np.float32)
        size = self._model.input_size[0]
        crops = [
            face_align.norm_crop(image_bgr, landmark=kps, image_size=size) for kps in landmarks
        ]
        return self._model.get_feat(crops)


class FaceAnalyzer:
    """Detection then recognition of every face in one photo, in a single batch."""

    def __init__(self, settings: EmbedSettings) -> None:
        self.detector = FaceDetector(settings)
        self.recognizer = FaceRecognizer(settings)

    def load(self) -> None:
        self.detector.load()
        self.recognizer.load()

    def analyze(self, image_bgr: np.ndarray) -> list[Face]:
        boxes, landmarks = self.detector.predict(image_bgr)
        embeddings = self.recognizer.predict(image_bgr, landmarks)
        return [
            Face(
                box=tuple(float(v) for v in box[:4]),
                score=float(box[4]),
                landmarks=tuple((float(x), float(y)) for x, y in points),
                embedding=embedding,
            )
            for box, points, embedding in zip(boxes, landmarks, embeddings, strict=True)
        ]
