"""Face detection, recognition and the pack's optional modules, run with insightface 0.7.3's
model classes exactly as its FaceAnalysis runs them, but loaded from a local pack only
(FaceAnalysis would download a missing pack) and with all faces recognised in one batch."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from insightface.app.common import Face as InsightfaceFace
from insightface.model_zoo.model_zoo import ModelRouter
from insightface.utils import face_align

from functions.common.telemetry import tracer
from functions.embed import runtime
from functions.embed.decode import DecodedPhoto
from functions.embed.settings import EmbedSettings

# insightface 0.7.3 (pinned: production's parameters) aligns faces with scikit-image's
# SimilarityTransform.estimate, deprecated since 0.26: a warning line per face otherwise.
warnings.filterwarnings(
    "ignore", message="`estimate` is deprecated", category=FutureWarning, module="insightface"
)

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

# What FaceAnalysis.get puts on a face itself; a module's `get` adds the rest.
_DETECTION_KEYS = frozenset({"bbox", "kps", "det_score"})


class ModelPackError(RuntimeError):
    """The model pack is missing, broken, or lacks a model the function needs; raised at
    start-up, so the process exits and the pod never becomes ready."""


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2; may reach past the image's edges
    score: float
    landmarks: tuple[tuple[float, float], ...]  # 5 points: eyes, nose, mouth corners
    embedding: np.ndarray  # float32[512], raw (not normalised), as insightface's face.embedding
    # Results of the optional modules: gender and age, landmark_2d_106, landmark_3d_68, pose.
    attributes: dict[str, Any] = field(default_factory=dict)

    def scaled(self, factor: float) -> Face:
        """The same face in the image `factor` times as large (pixel coordinates scaled)."""
        if factor == 1:
            return self
        return replace(
            self,
            box=tuple(v * factor for v in self.box),
            landmarks=tuple((x * factor, y * factor) for x, y in self.landmarks),
            attributes={
                name: value * factor if name.startswith("landmark_") else value
                for name, value in self.attributes.items()
            },
        )


def load_task_models(settings: EmbedSettings, tasknames: list[str]) -> dict[str, Any]:
    """insightface's model object for each task, on a session with the function's options,
    from the pack's first file, in name order, that insightface routes to that task: the file
    FaceAnalysis picks. Each file is opened once, and no further than the last task needs.

    `model_zoo.get_model` would drop our session options, so this calls its ModelRouter, which
    passes them, the providers and their options on to onnxruntime.
    """
    model_dir = settings.model_dir
    if not model_dir.is_dir():
        raise ModelPackError(f"model pack {model_dir} does not exist")
    providers = runtime.providers(settings)
    found: dict[str, Any] = {}
    for path in sorted(model_dir.glob("*.onnx")):
        if set(tasknames) <= found.keys():
            break
        model = _route(path, providers, settings)
        if model is not None and model.taskname in tasknames:
            found.setdefault(model.taskname, model)
    for taskname in tasknames:
        if taskname not in found:
            raise ModelPackError(f"model pack {model_dir} has no {taskname} model")
    return found


def _route(path: Path, providers: list[str], settings: EmbedSettings) -> Any:
    """insightface's model object for the file, its session on `providers`; if an accelerator
    provider (OpenVINO, CUDA) cannot make the session, on the CPU provider alone."""
    try:
        return _session_model(path, providers, settings)
    except Exception as exc:  # onnxruntime raises its own types for a broken file
        fallback = runtime.without_accelerators(providers)
        if not fallback:
            raise ModelPackError(f"model file {path} cannot be loaded: {exc}") from exc
        log.warning(
            "%s: %s cannot load it (%s); falling back to %s", path.name, providers, exc, fallback
        )
    try:
        return _session_model(path, fallback, settings)
    except Exception as exc:
        raise ModelPackError(f"model file {path} cannot be loaded: {exc}") from exc


def _session_model(path: Path, providers: list[str], settings: EmbedSettings) -> Any:
    printed = io.StringIO()
    try:
        # insightface prints the providers each session got: to the log instead.
        with contextlib.redirect_stdout(printed):
            return ModelRouter(str(path)).get_model(
                providers=providers,
                provider_options=runtime.provider_options(settings, providers),
                sess_options=runtime.session_options(settings),
            )
    finally:
        for line in printed.getvalue().splitlines():
            log.info("%s: %s", path.name, line)


class InferenceModel(ABC):
    """One model task: `load()` once at start-up, then `predict()` per photo."""

    taskname: str

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        self._model: Any = None

    def load(self, model: Any = None) -> None:
        """Prepare `model` (this task's, from load_task_models), else load it from the pack."""
        if model is None:
            model = load_task_models(self.settings, [self.taskname])[self.taskname]
        self._prepare(model)
        self._model = model

    @abstractmethod
    def _prepare(self, model: Any) -> None: ...

    @abstractmethod
    def predict(self, *inputs: Any) -> Any:
        """Run the loaded model on one photo's inputs."""


class FaceDetector(InferenceModel):
    """SCRFD: a BGR photo to boxes [n, 5] (x1, y1, x2, y2, score) and landmarks [n, 5, 2],
    best score first, at most `max_faces`."""

    taskname = "detection"

    def _prepare(self, model: Any) -> None:
        if not model.use_kps:
            raise ModelPackError(f"detection model {model.model_file} has no landmarks output")
        size = self.settings.det_size
        # ctx_id=0 keeps the session's providers; -1 would rebuild the session on CPU.
        model.prepare(
            ctx_id=0,
            input_size=(size, size),
            det_thresh=self.settings.det_thresh,
            nms_thresh=self.settings.nms_thresh,
        )

    def predict(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # insightface returns the faces that survive NMS in descending score order.
        boxes, landmarks = self._model.detect(image_bgr)
        keep = self.settings.max_faces
        return boxes[:keep], landmarks[:keep]


class FaceRecognizer(InferenceModel):
    """ArcFace: a BGR photo and its faces' landmarks [n, 5, 2] to embeddings [n, 512], all
    faces in one onnxruntime call instead of insightface's one call per face."""

    taskname = "recognition"

    def _prepare(self, model: Any) -> None:
        model.prepare(ctx_id=0)

    def predict(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        if len(landmarks) == 0:
            return np.empty((0, self._model.output_shape[1]), np.float32)
        size = self._model.input_size[0]
        crops = [
            face_align.norm_crop(image_bgr, landmark=kps, image_size=size) for kps in landmarks
        ]
        return self._model.get_feat(crops)


class FaceAttributeModel(InferenceModel):
    """An optional pack module (genderage, landmark_2d_106, landmark_3d_68) run through its own
    insightface `get`, face by face, as FaceAnalysis runs it. None changes the embedding."""

    def __init__(self, settings: EmbedSettings, taskname: str) -> None:
        super().__init__(settings)
        self.taskname = taskname

    def _prepare(self, model: Any) -> None:
        model.prepare(ctx_id=0)

    def predict(
        self, image_bgr: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray
    ) -> list[dict[str, Any]]:
        results = []
        for box, kps in zip(boxes, landmarks, strict=True):
            face = InsightfaceFace(bbox=box[:4], kps=kps, det_score=box[4])
            self._model.get(image_bgr, face)
            results.append({k: v for k, v in face.items() if k not in _DETECTION_KEYS})
        return results


class FaceAnalyzer:
    """Detection, then recognition of every face in one batch, then the optional modules.

    One photo is analysed at a time: onnxruntime already uses every core the pod has, and two
    inferences at once would oversubscribe them. Requests still overlap downloads, decoding
    and the database call with another request's inference.
    """

    def __init__(self, settings: EmbedSettings) -> None:
        self.detector = FaceDetector(settings)
        self.recognizer = FaceRecognizer(settings)
        self.attribute_models = [
            FaceAttributeModel(settings, name) for name in settings.optional_modules
        ]
        self._one_at_a_time = threading.Lock()

    def load(self) -> None:
        """Load every model, then run each once, so the first request is not the slow one."""
        models = [self.detector, self.recognizer, *self.attribute_models]
        loaded = load_task_models(self.detector.settings, [model.taskname for model in models])
        for model in models:
            model.load(loaded[model.taskname])
        self._warm_up()

    def _warm_up(self) -> None:
        size = self.detector.settings.det_size
        self.analyze(np.zeros((size, size, 3), np.uint8))
        # A blank image has no face; this one aligns to ArcFace's template exactly.
        landmarks = face_align.arcface_dst[None].astype(np.float32)
        box = np.array([[0.0, 0.0, 112.0, 112.0, 1.0]], np.float32)
        with self._one_at_a_time:
            self._describe(np.zeros((112, 112, 3), np.uint8), box, landmarks)

    def analyze_photo(self, photo: DecodedPhoto) -> list[Face]:
        """The faces in the photo's own pixels, whatever scale it was decoded at."""
        return [face.scaled(photo.reduction) for face in self.analyze(photo.image)]

    def analyze(self, image_bgr: np.ndarray) -> list[Face]:
        with self._one_at_a_time:
            with _tracer.start_as_current_span("detect") as span:
                boxes, landmarks = self.detector.predict(image_bgr)
                span.set_attribute("faces", len(boxes))
            return self._describe(image_bgr, boxes, landmarks)

    def _describe(
        self, image_bgr: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray
    ) -> list[Face]:
        with _tracer.start_as_current_span("recognise"):
            embeddings = self.recognizer.predict(image_bgr, landmarks)
        attributes = [{} for _ in boxes]
        for model in self.attribute_models:
            for found, extra in zip(
                attributes, model.predict(image_bgr, boxes, landmarks), strict=True
            ):
                found.update(extra)
        return [
            Face(
                box=tuple(float(v) for v in box[:4]),
                score=float(box[4]),
                landmarks=tuple((float(x), float(y)) for x, y in points),
                embedding=embedding,
                attributes=extra,
            )
            for box, points, embedding, extra in zip(
                boxes, landmarks, embeddings, attributes, strict=True
            )
        ]
