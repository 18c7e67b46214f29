import base64
import json
from dataclasses import replace

import numpy as np
import pytest

from functions.common.events import PhotoRef
from functions.embed.encoding import embedding_from_base64, embedding_payload, face_to_payload
from functions.embed.models import Face
from functions.embed.settings import EmbedSettings

PHOTO = PhotoRef(bucket="photos", key="user42/a.jpg", version_id="4_z1", user_id="user42")


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


def test_normalised_embedding_is_the_unit_vector_of_the_raw_one():
    face = make_face()

    decoded = embedding_from_base64(face_to_payload(face, normalize=True)["embedding"])

    assert np.linalg.norm(decoded) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(decoded, face.embedding / np.linalg.norm(face.embedding), atol=1e-7)


@pytest.mark.parametrize(
    ("normalize", "name"), [(False, "float32-raw-base64"), (True, "float32-l2norm-base64")]
)
def test_payload_names_how_embeddings_are_stored(normalize, name):
    payload = embedding_payload(
        PHOTO, EmbedSettings(normalize_embeddings=normalize), (4032, 3024), [make_face()], {}
    )

    assert payload["model"]["embedding"] == name


def test_payload_records_the_parameters_that_made_the_embeddings():
    settings = EmbedSettings(det_thresh=0.6, nms_thresh=0.3)

    payload = embedding_payload(PHOTO, settings, (4032, 3024), [], {"analyze": 1.0})

    assert payload["model"] == {
        "pack": "buffalo_l",
        "det_size": 640,
        "det_thresh": 0.6,
        "nms_thresh": 0.3,
        "embedding": "float32-raw-base64",
    }
    assert payload["image"] == {"width": 4032, "height": 3024}
    assert payload["faces"] == []


def test_optional_module_attributes_become_json_numbers():
    face = replace(
        make_face(),
        attributes={
            "gender": np.int64(1),
            "age": 31,
            "landmark_2d_106": np.full((106, 2), 12.3456, np.float32),
        },
    )

    attributes = json.loads(json.dumps(face_to_payload(face)))["attributes"]

    assert (attributes["gender"], attributes["age"]) == (1, 31)
    assert attributes["landmark_2d_106"][0] == [12.35, 12.35]


# AWS Lambda's limit for a synchronous (RequestResponse) invocation's request payload.
LAMBDA_SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024


def test_a_payload_of_the_most_faces_kept_fits_a_synchronous_lambda_invocation():
    settings = EmbedSettings()
    faces = [make_face() for _ in range(settings.max_faces)]

    payload = embedding_payload(PHOTO, settings, (8000, 6000), faces, {"analyze": 1.0})
    body = json.dumps(payload, separators=(",", ":")).encode()

    assert len(payload["faces"]) == 100
    assert len(body) < LAMBDA_SYNC_PAYLOAD_LIMIT / 10
