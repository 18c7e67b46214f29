"""The embed function as deployed: start-up (load, warm-up, readiness, a broken pack) and the
service's whole path from the bucket to the database Lambda on the local stack."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from devstack.make_test_model_pack import RECOGNIZER_FILE
from devstack.sample_photos import face_layout, sample_photo
from devstack.stack import GUNICORN_CONF, ROOT, free_port
from functions.common.config import LambdaSettings, StorageSettings
from functions.common.events import PhotoRef
from functions.common.lambda_client import DatabaseLambda
from functions.common.storage import ObjectStore
from functions.embed.app import create_app
from functions.embed.encoding import embedding_from_base64
from functions.embed.models import FaceAnalyzer, ModelPackError
from functions.embed.service import EmbedService
from functions.embed.settings import EmbedSettings
from tests.stack_fixtures import lambda_invocations


@pytest.fixture
def corrupt_pack(tmp_path, test_model_pack):
    pack = tmp_path / "models" / "buffalo_l"
    shutil.copytree(test_model_pack, pack)
    recognizer = pack / RECOGNIZER_FILE
    recognizer.write_bytes(recognizer.read_bytes()[:1000])
    return pack


def use_pack(monkeypatch, pack):
    monkeypatch.setenv("MODEL_ROOT", str(pack.parent))
    monkeypatch.setenv("MODEL_PACK", pack.name)


def test_the_app_is_ready_once_created(monkeypatch, test_model_pack):
    use_pack(monkeypatch, test_model_pack)

    response = create_app().test_client().get("/healthz")

    assert (response.status_code, response.json) == (200, {"ready": True})


def test_creating_the_app_with_a_corrupt_model_file_fails(monkeypatch, corrupt_pack):
    use_pack(monkeypatch, corrupt_pack)

    with pytest.raises(ModelPackError, match=RECOGNIZER_FILE):
        create_app()


def test_creating_the_app_without_a_pack_fails(monkeypatch, tmp_path):
    use_pack(monkeypatch, tmp_path / "buffalo_l")

    with pytest.raises(ModelPackError, match="does not exist"):
        create_app()


def test_gunicorn_exits_when_the_model_pack_is_corrupt(corrupt_pack):
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": "1",
        "MODEL_ROOT": str(corrupt_pack.parent),
        "MODEL_PACK": corrupt_pack.name,
    }
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]

    ended = subprocess.run(
        [*command, "functions.embed.app:create_app()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert ended.returncode != 0
    assert RECOGNIZER_FILE in ended.stderr


@pytest.fixture(scope="module")
def service_parts(stack, test_model_pack):
    """Storage and database clients configured as the stack configures its functions."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in stack.env.items():
            env.setenv(name, value)
        store = ObjectStore(StorageSettings.from_env())
        database = DatabaseLambda(LambdaSettings.from_env())
    return EmbedSettings(model_root=test_model_pack.parent), store, database


def embed(stack, service_parts, key, data, **overrides):
    settings, store, database = service_parts
    settings = settings.replace(**overrides)
    stored = stack.s3().put_object(Bucket=stack.config.bucket, Key=key, Body=data)
    photo = PhotoRef(stack.config.bucket, key, stored["VersionId"], key.split("/")[0])
    analyzer = FaceAnalyzer(settings)
    analyzer.load()
    result = EmbedService(settings, analyzer, store, database).process(photo)
    (payload,) = lambda_invocations(stack, key)
    return result, payload


def test_shrink_on_load_reports_faces_in_the_photos_own_pixels(stack, service_parts):
    data = sample_photo(6, 2, size=(4000, 3000), orientation=6)
    drawn = sorted(face.box for face in face_layout(6, 2, (4000, 3000)))

    result, payload = embed(stack, service_parts, "shrink/a.jpg", data, decode_shrink=True)

    assert result.faces == 2
    assert payload["image"] == {"width": 4000, "height": 3000}
    for face, box in zip(sorted(payload["faces"], key=lambda f: f["box"]), drawn, strict=True):
        np.testing.assert_allclose(face["box"], box, atol=0.04 * (box[2] - box[0]))


def test_normalised_embeddings_reach_the_database_with_unit_length(stack, service_parts):
    data = sample_photo(7, 1)

    _, payload = embed(stack, service_parts, "norm/a.jpg", data, normalize_embeddings=True)

    (face,) = payload["faces"]
    assert payload["model"]["embedding"] == "float32-l2norm-base64"
    assert np.linalg.norm(embedding_from_base64(face["embedding"])) == pytest.approx(1, abs=1e-6)
