"""scripts/check_parity.py on photos in the local stack's S3 server, against a sample made the
way prod_batch_embed makes its vectors: insightface's FaceAnalysis on cv2.imread of the file."""

import base64
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from insightface.app import FaceAnalysis

from devstack.sample_photos import sample_photo
from devstack.stack import ROOT
from scripts.check_parity import Report, main

PHOTOS = {
    "parity/one-face.jpg": sample_photo(11, 1),
    "parity/two-faces-rotated.jpg": sample_photo(12, 2, size=(2000, 3000), orientation=6),
    "parity/no-face.jpg": sample_photo(13, 0),
}


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("photos")
    for key, data in PHOTOS.items():
        (directory / key).parent.mkdir(parents=True, exist_ok=True)
        (directory / key).write_bytes(data)
    return directory


@pytest.fixture(scope="module")
def production_sample(photos_dir, test_model_pack):
    """What production stored for each photo: FaceAnalysis(...).get(cv2.imread(path))."""
    app = FaceAnalysis(
        root=str(test_model_pack.parent.parent),
        allowed_modules=["detection", "recognition"],
        providers=["CPUExecutionProvider"],
    )
    app.prepare(ctx_id=0, det_size=(640, 640))
    sample = {}
    for key in PHOTOS:
        faces = app.get(cv2.imread(str(photos_dir / key)))
        sample[key] = [
            {
                "box": [float(v) for v in face.bbox],
                "embedding": base64.b64encode(face.embedding.astype("<f4").tobytes()).decode(),
            }
            for face in faces
        ]
    return sample


def write_sample(path, sample):
    lines = [json.dumps({"key": key, "faces": faces}) for key, faces in sample.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def uploaded(stack):
    for key, data in PHOTOS.items():
        stack.s3().put_object(Bucket=stack.config.bucket, Key=key, Body=data)
    return stack


def run_against_bucket(stack, sample_path, test_model_pack):
    env = {**os.environ, **stack.env, "MODEL_ROOT": str(test_model_pack.parent)}
    command = [sys.executable, "-m", "scripts.check_parity", "--sample", str(sample_path)]
    return subprocess.run(
        [*command, "--bucket", stack.config.bucket],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary(output):
    (line,) = [line for line in output.splitlines() if line.startswith("parity: ")]
    return dict(item.split("=") for item in line.split()[1:-1]) | {"verdict": line.split()[-1]}


def test_the_services_vectors_match_what_production_stored(
    uploaded, production_sample, test_model_pack, tmp_path
):
    sample_path = write_sample(tmp_path / "sample.jsonl", production_sample)

    ended = run_against_bucket(uploaded, sample_path, test_model_pack)

    assert ended.returncode == 0, ended.stdout + ended.stderr
    result = summary(ended.stdout)
    assert (result["photos"], result["faces"], result["verdict"]) == ("3", "3", "PASS")
    assert float(result["cosine_min"]) >= 0.9999
    assert (result["count_mismatches"], result["unpaired"], result["failed"]) == ("0", "0", "0")


def test_differing_vectors_counts_and_missing_photos_are_reported(
    uploaded, production_sample, test_model_pack, tmp_path
):
    tampered = dict(production_sample)
    two = tampered["parity/two-faces-rotated.jpg"]
    tampered["parity/two-faces-rotated.jpg"] = two[:1]
    tampered["parity/one-face.jpg"] = [
        {**tampered["parity/one-face.jpg"][0], "embedding": two[1]["embedding"]}
    ]
    tampered["parity/deleted.jpg"] = []
    sample_path = write_sample(tmp_path / "sample.jsonl", tampered)

    ended = run_against_bucket(uploaded, sample_path, test_model_pack)

    assert ended.returncode == 1
    result = summary(ended.stdout)
    assert (result["count_mismatches"], result["unpaired"], result["failed"]) == ("1", "1", "1")
    assert float(result["cosine_min"]) < 0.9
    assert result["verdict"] == "FAIL"
    assert "parity/two-faces-rotated.jpg: 1 → 2" in ended.stdout


def test_photos_can_be_read_from_a_folder_and_embeddings_given_as_numbers(
    photos_dir, production_sample, test_model_pack, tmp_path, monkeypatch, capsys
):
    as_numbers = {
        key: [
            {
                **face,
                "embedding": np.frombuffer(base64.b64decode(face["embedding"]), "<f4").tolist(),
            }
            for face in faces
        ]
        for key, faces in production_sample.items()
    }
    sample_path = write_sample(tmp_path / "sample.jsonl", as_numbers)
    monkeypatch.setenv("MODEL_ROOT", str(test_model_pack.parent))

    code = main(["--sample", str(sample_path), "--photos-dir", str(photos_dir)])

    assert code == 0
    assert summary(capsys.readouterr().out)["verdict"] == "PASS"


def test_a_sample_whose_faces_cannot_be_paired_fails_even_with_equal_counts():
    report = Report(
        photos=1, production_faces=2, service_faces=2, unpaired_production=2, unpaired_service=2
    )
    assert not report.passed(min_cosine=0.9999)
