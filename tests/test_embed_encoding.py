import base64
import json

import numpy as np

from functions.embed.encoding import embedding_from_base64, face_to_payload
from functions.embed.models import Face


def make_face():
    embedding = np.random.default_rng(0).standard_normal(512).astype(np.float32) * 20
    return Face(
        box=(10.123456, 20.5, 110.987654, 121.0),
        score=0.876543,
        landmarks=((40.111, 50.222), (80.333, 50.444), (60.5, 70.5), (45.0, 95.0), (75.0, 95.0)),
        embedding=embedding,
    )


def test_embedding_round_trips_exactly():
    face = make_face()

    decoded = embedding_from_base64(face_to_payload(face)["embedding"])

    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, face.embedding)


def test_embedding_is_base64_of_little_endian_float32():
    face = make_face()

    raw = base64.b64decode(face_to_payload(face)["embedding"])

    assert len(raw) == 512 * 4
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), face.embedding)


def test_payload_is_json_with_rounded_geometry():
    payload = json.loads(json.dumps(face_to_payload(make_face())))

    assert payload["box"] == [10.12, 20.5, 110.99, 121.0]
    assert payload["score"] == 0.8765
    assert payload["landmarks"][0] == [40.11, 50.22]
    assert len(payload["landmarks"]) == 5
