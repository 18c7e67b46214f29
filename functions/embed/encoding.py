"""Faces as the JSON the database Lambda receives."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from functions.embed.models import Face

_EMBEDDING_DTYPE = np.dtype("<f4")


def face_to_payload(face: Face) -> dict[str, Any]:
    """Box and landmarks in pixels of the displayed photo, the embedding as base64 of its
    little-endian float32 bytes."""
    return {
        "box": [round(v, 2) for v in face.box],
        "score": round(face.score, 4),
        "landmarks": [[round(x, 2), round(y, 2)] for x, y in face.landmarks],
        "embedding": base64.b64encode(face.embedding.astype(_EMBEDDING_DTYPE).tobytes()).decode(),
    }


def embedding_from_base64(encoded: str) -> np.ndarray:
    raw = base64.b64decode(encoded, validate=True)
    return np.frombuffer(raw, _EMBEDDING_DTYPE).astype(np.float32)
