"""Faces as the JSON the database Lambda receives."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from functions.common.events import PhotoRef, lambda_payload
from functions.common.pipeline import PIPELINE
from functions.embed.models import Face
from functions.embed.settings import EmbedSettings

_EMBEDDING_DTYPE = np.dtype("<f4")


def embedding_format(settings: EmbedSettings) -> str:
    """How `faces[].embedding` is encoded, named in the payload's `model.embedding`."""
    kind = "l2norm" if settings.normalize_embeddings else "raw"
    return f"float32-{kind}-base64"


def embedding_payload(
    photo: PhotoRef,
    settings: EmbedSettings,
    size: tuple[int, int],
    faces: list[Face],
    timings_ms: dict[str, float],
) -> dict[str, Any]:
    """The `embedding.created` invocation of the database Lambda; `size` is the photo's
    displayed (width, height), the frame of every box and landmark."""
    return lambda_payload(
        PIPELINE["embed"].created,
        photo,
        model={
            "pack": settings.model_pack,
            "det_size": settings.det_size,
            "det_thresh": settings.det_thresh,
            "nms_thresh": settings.nms_thresh,
            "embedding": embedding_format(settings),
        },
        image={"width": size[0], "height": size[1]},
        faces=[face_to_payload(face, settings.normalize_embeddings) for face in faces],
        timings_ms=timings_ms,
    )


def face_to_payload(face: Face, normalize: bool = False) -> dict[str, Any]:
    """Box and landmarks in pixels of the displayed photo, the embedding as base64 of its
    little-endian float32 bytes (L2-normalised when `normalize`), and any optional module's
    attributes."""
    embedding = face.embedding.astype(_EMBEDDING_DTYPE)
    if normalize:
        embedding = embedding / np.linalg.norm(embedding)
    payload = {
        "box": [round(v, 2) for v in face.box],
        "score": round(face.score, 4),
        "landmarks": [[round(x, 2), round(y, 2)] for x, y in face.landmarks],
        "embedding": base64.b64encode(
            embedding.astype(_EMBEDDING_DTYPE, copy=False).tobytes()
        ).decode(),
    }
    if face.attributes:
        payload["attributes"] = {
            name: _json_value(value) for name, value in face.attributes.items()
        }
    return payload


def embedding_from_base64(encoded: str) -> np.ndarray:
    raw = base64.b64decode(encoded, validate=True)
    return np.frombuffer(raw, _EMBEDDING_DTYPE).astype(np.float32)


def _json_value(value: Any) -> Any:
    """insightface's attribute values (numpy scalars and point arrays) as JSON numbers."""
    if isinstance(value, np.ndarray):
        return np.round(value.astype(np.float64), 2).tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return round(float(value), 4)
    return value
