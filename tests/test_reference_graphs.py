import contextlib
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from insightface.app import FaceAnalysis
from insightface.model_zoo.model_zoo import ModelRouter

from devstack import make_test_model_pack
from devstack.make_test_model_pack import DETECTOR_FILE, RECOGNIZER_FILE
from devstack.sample_photos import face_layout, sample_photo
from functions.embed import runtime
from functions.embed.decode import decode_photo
from functions.embed.models import FaceAnalyzer
from functions.embed.settings import EmbedSettings
from scripts.reference_graphs import (
    PACK_NAME,
    cached_pack,
    detector_model,
    multiply_accumulates,
    recognizer_model,
)

CPU = [runtime.CPU]
SCRFD_OUTPUT_NAMES = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return cached_pack(tmp_path_factory.mktemp("bench-models"))


@pytest.fixture(scope="module")
def settings(pack):
    return EmbedSettings(model_root=pack.parent, model_pack=pack.name)


@pytest.fixture(scope="module")
def analyzer(settings):
    analyzer = FaceAnalyzer(settings)
    analyzer.load()
    return analyzer


def routed(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return ModelRouter(str(path)).get_model(providers=CPU)


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_detector_has_det_10g_input_and_nine_scrfd_outputs_in_order(pack):
    graph = onnx.load(pack / DETECTOR_FILE, load_external_data=False).graph

    assert [(i.name, dims(i)) for i in graph.input] == [("input.1", [1, 3, "?", "?"])]
    assert [o.name for o in graph.output] == SCRFD_OUTPUT_NAMES
    assert [dims(o)[1] for o in graph.output] == [1] * 3 + [4] * 3 + [10] * 3


def test_recognizer_has_w600k_r50_input_and_one_512_wide_output(pack):
    graph = onnx.load(pack / RECOGNIZER_FILE, load_external_data=False).graph

    assert [(i.name, dims(i)) for i in graph.input] == [("input.1", ["None", 3, 112, 112])]
    assert [dims(o) for o in graph.output] == [["None", 512]]


def test_detector_does_scrfd_10gf_compute_published_at_vga():
    macs = multiply_accumulates(detector_model(), [1, 3, 480, 640])

    assert macs == pytest.approx(10e9, rel=0.1)


def test_recognizer_does_iresnet50_compute():
    macs = multiply_accumulates(recognizer_model(), [1, 3, 112, 112])

    assert macs == pytest.approx(6.3e9, rel=0.1)


def test_model_router_sees_a_scrfd_detector_with_keypoints(pack):
    detector = routed(pack / DETECTOR_FILE)

    assert (detector.taskname, detector.use_kps, detector.fmc) == ("detection", True, 3)


def test_model_router_sees_an_arcface_normalised_like_w600k_r50(pack):
    recognizer = routed(pack / RECOGNIZER_FILE)

    assert recognizer.taskname == "recognition"
    assert (recognizer.input_mean, recognizer.input_std) == (127.5, 127.5)
    assert recognizer.output_shape == ["None", 512]


def test_detector_outputs_are_the_marker_branch_plus_a_negligible_backbone_term(pack):
    blob = np.random.default_rng(0).uniform(-1, 1, (1, 3, 640, 640)).astype(np.float32)
    marker_graph = make_test_model_pack.detector_model().SerializeToString()
    full = ort.InferenceSession(str(pack / DETECTOR_FILE), providers=CPU)
    marker = ort.InferenceSession(marker_graph, providers=CPU)

    full_out = full.run(None, {"input.1": blob})
    marker_out = marker.run(None, {"input.1": blob})

    for with_backbone, alone in zip(full_out, marker_out, strict=True):
        assert not np.array_equal(with_backbone, alone)
    for with_backbone, alone in zip(full_out[:3], marker_out[:3], strict=True):
        np.testing.assert_allclose(with_backbone, alone, rtol=0, atol=1.01e-6)


@pytest.mark.parametrize("faces", [0, 1, 4])
def test_photo_with_n_markers_yields_n_faces_where_they_are_drawn(analyzer, settings, faces):
    decoded = decode_photo(sample_photo(7, faces), settings)
    found = analyzer.analyze_photo(decoded)

    drawn = sorted(face.box for face in face_layout(7, faces))
    assert len(found) == faces
    for box, expected in zip(sorted(face.box for face in found), drawn, strict=True):
        np.testing.assert_allclose(box, expected, atol=0.04 * (expected[2] - expected[0]))


def test_stock_face_analysis_loads_the_pack_without_downloading(pack):
    with contextlib.redirect_stdout(io.StringIO()):
        stock = FaceAnalysis(
            name=PACK_NAME,
            root=str(pack.parent.parent),
            allowed_modules=["detection", "recognition"],
            providers=CPU,
        )

    assert set(stock.models) == {"detection", "recognition"}


def test_cached_pack_is_built_once(pack):
    before = [(pack / name).stat().st_mtime_ns for name in (DETECTOR_FILE, RECOGNIZER_FILE)]

    again = cached_pack(pack.parent.parent.parent)

    after = [(again / name).stat().st_mtime_ns for name in (DETECTOR_FILE, RECOGNIZER_FILE)]
    assert (again, after) == (pack, before)
