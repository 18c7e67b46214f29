"""scripts/check_parity.py on photos in the local stack's S3 server, against a sample made the
way prod_batch_embed makes its vectors: insightface's FaceAnalysis on cv2.imread of the file."""

import base64
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from insightface.app import FaceAnalysis

from devstack.sample_photos import sample_photo
from devstack.stack import ROOT
from functions.embed import runtime
from functions.embed.models import Face
from scripts.check_parity import ProviderCheck, Report, main

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


def provider_line(output):
    (line,) = [line for line in output.splitlines() if line.startswith("providers: ")]
    return line


@pytest.mark.skipif(
    runtime.OPENVINO not in ort.get_available_providers(),
    reason="this onnxruntime build has no OpenVINO provider",
)
def test_openvino_is_compared_with_the_cpu_provider_on_the_same_photos(
    photos_dir, production_sample, test_model_pack, tmp_path, monkeypatch, capsys
):
    sample_path = write_sample(tmp_path / "sample.jsonl", production_sample)
    monkeypatch.setenv("MODEL_ROOT", str(test_model_pack.parent))
    monkeypatch.delenv("ORT_PROVIDERS", raising=False)

    code = main(["--sample", str(sample_path), "--photos-dir", str(photos_dir)])

    line = provider_line(capsys.readouterr().out)
    assert code == 0, line
    fields = dict(item.split("=") for item in line.split()[4:-1])
    assert line.startswith("providers: OpenVINOExecutionProvider,CPUExecutionProvider vs ")
    assert (fields["photos"], fields["faces"], line.split()[-1]) == ("3", "3", "PASS")
    assert float(fields["cosine_min"]) >= 0.99999
    assert max(float(fields["box_max_px"]), float(fields["landmark_max_px"])) <= 0.01


def test_on_the_cpu_provider_alone_there_is_no_provider_comparison(
    photos_dir, production_sample, test_model_pack, tmp_path, monkeypatch, capsys
):
    sample_path = write_sample(tmp_path / "sample.jsonl", production_sample)
    monkeypatch.setenv("MODEL_ROOT", str(test_model_pack.parent))
    monkeypatch.setenv("ORT_PROVIDERS", "CPUExecutionProvider")

    code = main(["--sample", str(sample_path), "--photos-dir", str(photos_dir)])

    assert code == 0
    assert "no provider comparison" in provider_line(capsys.readouterr().out)


def face(box, shift=0.0, embedding=(1.0, 0.0)):
    return Face(
        box=tuple(v + shift for v in box),
        score=0.9,
        landmarks=((box[0] + shift, box[1]),) * 5,
        embedding=np.array(embedding, np.float32),
    )


@pytest.mark.parametrize(
    ("shift", "embedding", "passed"),
    [
        (0.005, (1.0, 0.0), True),
        (0.02, (1.0, 0.0), False),
        (0.0, (1.0, 0.01), False),  # cosine 0.99995
    ],
)
def test_providers_differing_by_more_than_001_px_or_below_cosine_099999_fail(
    shift, embedding, passed
):
    check = ProviderCheck([runtime.OPENVINO, runtime.CPU])
    box = (10.0, 20.0, 110.0, 140.0)

    check.add("photo.jpg", [face(box, shift, embedding)], [face(box)])

    assert check.passed(min_cosine=0.99999, max_px=0.01) is passed


def test_a_face_only_one_provider_finds_fails_the_provider_comparison():
    check = ProviderCheck([runtime.OPENVINO, runtime.CPU])
    box = (10.0, 20.0, 110.0, 140.0)

    check.add("photo.jpg", [face(box), face((300.0, 20.0, 400.0, 140.0))], [face(box)])

    assert (len(check.count_mismatches), check.unpaired) == (1, 1)
    assert not check.passed(min_cosine=0.99999, max_px=0.01)
