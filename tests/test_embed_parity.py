"""The embed function's faces equal the production batch job's reference, insightface 0.7.3's
`FaceAnalysis(...).get(cv2.imread(path))`, on the same pack and file.

The pack is the real one in MODEL_ROOT/MODEL_PACK when there is one (the embed image has
buffalo_l in /models), else the generated TEST pack; the photos hold faces for both
(tests/embed_photos.py), so these tests run unchanged against either.
"""

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from insightface.app import FaceAnalysis

from functions.embed import runtime
from functions.embed.decode import decode_photo
from functions.embed.models import FaceAnalyzer
from functions.embed.settings import EmbedSettings
from scripts.check_parity import PROVIDER_MAX_PX, PROVIDER_MIN_COSINE, cosine
from tests.embed_photos import encode, multi_picture, scene

MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def pack(test_model_pack):
    installed = EmbedSettings.from_env().model_dir
    return installed if any(installed.glob("*.onnx")) else test_model_pack


@pytest.fixture(scope="module")
def real_pack(pack, test_model_pack):
    return pack != test_model_pack


@pytest.fixture(scope="module")
def settings(pack):
    return EmbedSettings(
        model_root=pack.parent, model_pack=pack.name, providers=("CPUExecutionProvider",)
    )


@pytest.fixture(scope="module")
def analyzer(settings):
    analyzer = FaceAnalyzer(settings)
    analyzer.load()
    return analyzer


@pytest.fixture(scope="module")
def reference(pack, tmp_path_factory):
    """Production's call. FaceAnalysis reads <root>/models/<name> (and would download a pack
    that is not there), so the pack is linked in at that place."""
    root = tmp_path_factory.mktemp("reference")
    (root / "models").mkdir()
    (root / "models" / pack.name).symlink_to(pack, target_is_directory=True)
    app = FaceAnalysis(
        name=pack.name,
        root=str(root),
        allowed_modules=["detection", "recognition"],
        providers=["CPUExecutionProvider"],
    )
    app.prepare(ctx_id=0, det_size=(640, 640))
    return app


def by_box(faces, box=lambda face: tuple(face.box)):
    return sorted(faces, key=box)


PHOTOS = {
    "jpeg": (lambda: encode(scene()), "jpg", True),
    "exif_rotated_jpeg": (lambda: encode(scene(), orientation=6), "jpg", True),
    "png": (lambda: encode(scene(), "PNG"), "png", True),
    "cmyk_jpeg": (lambda: encode(scene(), mode="CMYK"), "jpg", True),
    # Pillow reports it as MPO; cv2.imread decodes its first picture as any JPEG.
    "multi_picture_jpeg": (lambda: multi_picture(scene()), "jpg", True),
    # The TEST pack's markers are colours, so greyscale holds faces for a real pack only.
    "greyscale_jpeg": (lambda: encode(scene(), mode="L"), "jpg", False),
    "faces_cut_by_the_edges": (lambda: encode(scene(edge=True)), "jpg", True),
}


@pytest.mark.parametrize("name", PHOTOS)
def test_faces_equal_face_analysis_on_the_same_file(
    analyzer, reference, settings, real_pack, tmp_path, name
):
    make, suffix, markers_visible = PHOTOS[name]
    data = make()
    path = tmp_path / f"photo.{suffix}"
    path.write_bytes(data)

    expected = by_box(reference.get(cv2.imread(str(path))), lambda face: tuple(face.bbox))
    found = by_box(analyzer.analyze_photo(decode_photo(data, settings)))

    assert len(found) == len(expected) >= (1 if markers_visible or real_pack else 0)
    for face, reference_face in zip(found, expected, strict=True):
        np.testing.assert_allclose(face.box, reference_face.bbox, atol=1.0)
        np.testing.assert_allclose(face.landmarks, reference_face.kps, atol=1.0)
        assert face.score == pytest.approx(reference_face.det_score, abs=1e-4)
        assert cosine(face.embedding, reference_face.embedding) >= MIN_COSINE


@pytest.mark.skipif(
    runtime.OPENVINO not in ort.get_available_providers(),
    reason="this onnxruntime build has no OpenVINO provider",
)
@pytest.mark.parametrize("name", PHOTOS)
def test_faces_on_openvino_equal_the_cpu_providers(analyzer, settings, name):
    """The function's default providers (OpenVINO where the build has it) against `analyzer`,
    on the CPU provider alone as FaceAnalysis runs: far closer than production parity asks."""
    on_openvino = FaceAnalyzer(settings.replace(providers=EmbedSettings().providers))
    on_openvino.load()
    assert on_openvino.detector._model.session.get_providers()[0] == runtime.OPENVINO
    decoded = decode_photo(PHOTOS[name][0](), settings)

    expected = by_box(analyzer.analyze_photo(decoded))
    found = by_box(on_openvino.analyze_photo(decoded))

    assert len(found) == len(expected)
    for face, cpu_face in zip(found, expected, strict=True):
        np.testing.assert_allclose(face.box, cpu_face.box, atol=PROVIDER_MAX_PX)
        np.testing.assert_allclose(face.landmarks, cpu_face.landmarks, atol=PROVIDER_MAX_PX)
        assert cosine(face.embedding, cpu_face.embedding) >= PROVIDER_MIN_COSINE


def test_max_faces_keeps_the_faces_with_the_best_scores(analyzer, settings):
    image = decode_photo(encode(scene()), settings).image
    capped = FaceAnalyzer(settings.replace(max_faces=2))
    capped.load()

    every = sorted(analyzer.analyze(image), key=lambda face: -face.score)
    kept = capped.analyze(image)

    assert len(every) > 2
    assert [face.box for face in kept] == [face.box for face in every[:2]]


def test_rgb_pixels_fed_as_bgr_change_the_embeddings(analyzer, settings):
    bgr = decode_photo(encode(scene()), settings).image

    expected = by_box(analyzer.analyze(bgr))
    swapped = by_box(analyzer.analyze(np.ascontiguousarray(bgr[..., ::-1])))

    assert expected
    assert (
        len(swapped) != len(expected)
        or min(cosine(a.embedding, b.embedding) for a, b in zip(swapped, expected, strict=True))
        < MIN_COSINE
    )
