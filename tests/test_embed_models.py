import io
import json
import shutil

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from insightface.app import FaceAnalysis
from insightface.model_zoo import model_zoo
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from devstack.make_test_model_pack import DETECTOR_FILE, RECOGNIZER_FILE, draw_face
from devstack.sample_photos import face_layout, sample_photo
from functions.embed import runtime
from functions.embed.decode import decode_photo
from functions.embed.models import (
    FaceAnalyzer,
    FaceRecognizer,
    ModelPackError,
    load_task_models,
)
from functions.embed.settings import EmbedSettings
from scripts.check_parity import cosine
from tests.embed_photos import scene


@pytest.fixture(scope="module")
def settings(test_model_pack):
    return EmbedSettings(model_root=test_model_pack.parent, model_pack=test_model_pack.name)


@pytest.fixture(scope="module")
def analyzer(settings):
    analyzer = FaceAnalyzer(settings)
    analyzer.load()
    return analyzer


def analyze_sample(analyzer, settings, seed, faces, orientation=1):
    data = sample_photo(seed, faces, orientation=orientation)
    return sorted(analyzer.analyze(decode_photo(data, settings).image), key=lambda face: face.box)


def drawn_boxes(seed, faces, size=(3000, 2000)):
    return sorted(face.box for face in face_layout(seed, faces, size))


def assert_near(box, drawn):
    side = drawn[2] - drawn[0]
    np.testing.assert_allclose(box, drawn, atol=0.04 * side)


def photo_of(identity, center, size):
    image = Image.new("RGB", (1600, 1200), (120, 118, 124))
    draw_face(image, center, size, identity)
    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def embedding_of(analyzer, image_bgr):
    (face,) = analyzer.analyze(image_bgr)
    return face.embedding


def test_pack_files_route_through_insightface_model_zoo(test_model_pack):
    cpu = ["CPUExecutionProvider"]
    detector = model_zoo.get_model(str(test_model_pack / DETECTOR_FILE), providers=cpu)
    recognizer = model_zoo.get_model(str(test_model_pack / RECOGNIZER_FILE), providers=cpu)

    assert (detector.taskname, detector.use_kps) == ("detection", True)
    assert recognizer.taskname == "recognition"
    assert (recognizer.input_mean, recognizer.input_std) == (127.5, 127.5)


def test_loading_logs_the_providers_insightface_would_print(settings, capsys, caplog):
    with caplog.at_level("INFO", logger="functions.embed.models"):
        FaceRecognizer(settings).load()
    assert capsys.readouterr().out == ""
    assert "Applied providers" in caplog.text


def test_models_run_with_the_function_session_options(settings):
    detector = load_task_models(settings, ["detection"])["detection"]

    options = detector.session.get_session_options()
    assert options.intra_op_num_threads == settings.intra_op_threads
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_only_available_providers_are_used():
    settings = EmbedSettings(providers=("NoSuchExecutionProvider", "CPUExecutionProvider"))

    assert runtime.providers(settings) == ["CPUExecutionProvider"]


def test_no_available_provider_is_an_error():
    with pytest.raises(RuntimeError, match="NoSuchExecutionProvider"):
        runtime.providers(EmbedSettings(providers=("NoSuchExecutionProvider",)))


HAS_OPENVINO = runtime.OPENVINO in ort.get_available_providers()
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="this onnxruntime build has no OpenVINO provider"
)


def test_openvino_runs_one_inference_at_a_time_on_the_pods_threads_unpinned_in_f32():
    settings = EmbedSettings(intra_op_threads=3)

    (options,) = runtime.provider_options(settings, [runtime.OPENVINO])

    assert options["device_type"] == "CPU"
    assert json.loads(options["load_config"]) == {
        "CPU": {
            "INFERENCE_NUM_THREADS": "3",
            "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": "NO",
        }
    }


def test_the_cpu_and_cuda_providers_keep_their_default_options():
    chosen = [runtime.CUDA, runtime.CPU]

    assert runtime.provider_options(EmbedSettings(), chosen) == [{}, {}]


@needs_openvino
def test_sessions_run_on_openvino_with_the_cpu_provider_behind_it(settings):
    detector = load_task_models(settings, ["detection"])["detection"]

    assert detector.session.get_providers() == [runtime.OPENVINO, runtime.CPU]


@needs_openvino
def test_a_session_openvino_cannot_make_is_made_on_the_cpu_provider(settings, monkeypatch, caplog):
    monkeypatch.setattr(runtime, "openvino_properties", lambda settings: {"NO_SUCH_PROPERTY": "1"})

    with caplog.at_level("WARNING", logger="functions.embed.models"):
        detector = load_task_models(settings, ["detection"])["detection"]

    assert detector.session.get_providers() == [runtime.CPU]
    assert "falling back to ['CPUExecutionProvider']" in caplog.text


def test_photo_without_markers_has_no_faces(analyzer, settings):
    assert analyze_sample(analyzer, settings, seed=1, faces=0) == []


@pytest.mark.parametrize("faces", [1, 3])
def test_each_marker_is_one_face_at_its_drawn_box(analyzer, settings, faces):
    found = analyze_sample(analyzer, settings, seed=faces, faces=faces)

    assert len(found) == faces
    for face, drawn in zip(found, drawn_boxes(faces, faces), strict=True):
        assert_near(face.box, drawn)


def test_landmarks_are_eyes_nose_and_mouth_inside_the_box(analyzer, settings):
    (face,) = analyze_sample(analyzer, settings, seed=1, faces=1)
    (left_eye, right_eye, nose, left_mouth, right_mouth) = face.landmarks
    x1, y1, x2, y2 = face.box

    assert all(x1 < x < x2 and y1 < y < y2 for x, y in face.landmarks)
    assert left_eye[0] < nose[0] < right_eye[0]
    assert left_mouth[0] < nose[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_exif_orientation_is_applied_before_detection(analyzer, settings):
    found = analyze_sample(analyzer, settings, seed=4, faces=2, orientation=6)

    assert len(found) == 2
    for face, drawn in zip(found, drawn_boxes(4, 2), strict=True):
        assert_near(face.box, drawn)


def test_embeddings_are_raw_512_float32(analyzer, settings):
    (face,) = analyze_sample(analyzer, settings, seed=1, faces=1)

    assert face.embedding.shape == (512,)
    assert face.embedding.dtype == np.float32
    assert not np.isclose(np.linalg.norm(face.embedding), 1.0)


def test_same_identity_in_different_photos_embeds_alike(analyzer):
    first = embedding_of(analyzer, photo_of(3, (400, 400), 250))
    second = embedding_of(analyzer, photo_of(3, (1100, 700), 420))

    assert cosine(first, second) > 0.99


def test_different_identities_embed_apart(analyzer):
    first = embedding_of(analyzer, photo_of(3, (400, 400), 250))
    second = embedding_of(analyzer, photo_of(4, (400, 400), 250))

    assert cosine(first, second) < 0.9


def test_recognizer_batches_all_faces_like_one_at_a_time(analyzer, settings):
    image = decode_photo(sample_photo(2, 3), settings).image
    _, landmarks = analyzer.detector.predict(image)

    batched = analyzer.recognizer.predict(image, landmarks)
    single = [analyzer.recognizer.predict(image, landmarks[i : i + 1])[0] for i in range(3)]

    np.testing.assert_allclose(batched, np.stack(single), rtol=1e-5, atol=1e-5)


def test_recognizer_with_no_faces_returns_no_embeddings(settings):
    recognizer = FaceRecognizer(settings)
    recognizer.load()

    embeddings = recognizer.predict(photo_of(1, (800, 600), 300), np.empty((0, 5, 2)))

    assert embeddings.shape == (0, 512)


def test_missing_pack_directory_fails_at_load(tmp_path):
    analyzer = FaceAnalyzer(EmbedSettings(model_root=tmp_path, model_pack="absent"))

    with pytest.raises(ModelPackError, match="does not exist"):
        analyzer.load()


def test_pack_without_recognizer_fails_at_load(tmp_path, test_model_pack):
    shutil.copy(test_model_pack / DETECTOR_FILE, tmp_path / DETECTOR_FILE)
    analyzer = FaceAnalyzer(EmbedSettings(model_root=tmp_path.parent, model_pack=tmp_path.name))

    with pytest.raises(ModelPackError, match="no recognition model"):
        analyzer.load()


def test_load_warms_the_detector_up_at_the_detection_size(settings):
    analyzer = FaceAnalyzer(settings)

    analyzer.load()

    # insightface caches the anchor grid of each input size its detector has run at.
    size = settings.det_size
    assert (size // 8, size // 8, 8) in analyzer.detector._model.center_cache


def test_a_higher_detection_threshold_finds_fewer_faces(analyzer, settings):
    image = bgr(scene())
    strict = FaceAnalyzer(settings.replace(det_thresh=0.93))
    strict.load()

    assert 0 < len(strict.analyze(image)) < len(analyzer.analyze(image))


def test_nms_threshold_one_keeps_every_overlapping_detection(analyzer, settings):
    image = bgr(scene())
    loose = FaceAnalyzer(settings.replace(nms_thresh=1.0))
    loose.load()

    assert len(loose.analyze(image)) > len(analyzer.analyze(image))


def test_a_face_cut_by_the_edge_has_a_box_reaching_past_it(analyzer):
    faces = analyzer.analyze(bgr(scene(edge=True)))

    assert min(face.box[0] for face in faces) < 0


def test_a_shrunk_decode_reports_faces_in_the_photos_own_pixels(analyzer, settings):
    data = sample_photo(4, 3, size=(4000, 3000), orientation=6)
    shrunk = decode_photo(data, settings.replace(decode_shrink=True))

    found = sorted(analyzer.analyze_photo(shrunk), key=lambda face: face.box)
    full = sorted(analyzer.analyze_photo(decode_photo(data, settings)), key=lambda f: f.box)

    assert shrunk.reduction == 2
    assert len(found) == len(full) == 3
    for face, full_face in zip(found, full, strict=True):
        np.testing.assert_allclose(face.box, full_face.box, atol=1.0)
        np.testing.assert_allclose(face.landmarks, full_face.landmarks, atol=1.0)


def test_a_corrupt_model_file_fails_at_load_naming_the_file(tmp_path, test_model_pack):
    pack = tmp_path / "models" / "buffalo_l"
    shutil.copytree(test_model_pack, pack)
    recognizer = pack / RECOGNIZER_FILE
    recognizer.write_bytes(recognizer.read_bytes()[:1000])
    analyzer = FaceAnalyzer(EmbedSettings(model_root=pack.parent))

    with pytest.raises(ModelPackError, match=RECOGNIZER_FILE):
        analyzer.load()


def genderage_model():
    """A model by insightface's genderage contract ([1, 3, 96, 96] -> two gender logits and
    age / 100): the crop's mean colour times a fixed matrix."""
    weights = np.array([[1.0, -1.0, 0.2], [-1.0, 1.0, 0.3], [0.5, 0.5, 0.4]], np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["colour"], name="flatten"),
        helper.make_node("MatMul", ["colour", "weights"], ["fc1"], name="project"),
    ]
    graph = helper.make_graph(
        nodes,
        "genderage",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 96, 96])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def pack_with_genderage(tmp_path_factory, test_model_pack):
    pack = tmp_path_factory.mktemp("genderage") / "models" / "buffalo_l"
    shutil.copytree(test_model_pack, pack)
    onnx.save(genderage_model(), pack / "genderage.onnx")
    return pack


def test_an_optional_module_adds_its_attributes_as_face_analysis_does(pack_with_genderage):
    modules = ["detection", "recognition", "genderage"]
    analyzer = FaceAnalyzer(EmbedSettings(model_root=pack_with_genderage.parent, modules=modules))
    analyzer.load()
    reference = FaceAnalysis(
        root=str(pack_with_genderage.parent.parent),
        allowed_modules=modules,
        providers=["CPUExecutionProvider"],
    )
    reference.prepare(ctx_id=0, det_size=(640, 640))
    image = bgr(scene())

    found = sorted(analyzer.analyze(image), key=lambda face: face.box)
    expected = sorted(reference.get(image), key=lambda face: tuple(face.bbox))

    assert len(found) == len(expected) == 3
    for face, reference_face in zip(found, expected, strict=True):
        assert face.attributes == {"gender": reference_face.gender, "age": reference_face.age}


def test_modules_left_out_of_the_configuration_do_not_run(pack_with_genderage):
    analyzer = FaceAnalyzer(EmbedSettings(model_root=pack_with_genderage.parent))
    analyzer.load()

    faces = analyzer.analyze(bgr(scene()))

    assert faces
    assert all(face.attributes == {} for face in faces)


def bgr(image):
    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def test_a_48_megapixel_photo_under_the_pixel_limit_is_analysed(analyzer, settings):
    image = Image.new("RGB", (8000, 6000), (120, 118, 124))
    drawn = [((1500, 1500), 1200, 1), ((6000, 4000), 1600, 2)]
    for center, side, identity in drawn:
        draw_face(image, center, side, identity)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)

    decoded = decode_photo(buffer.getvalue(), settings)
    faces = sorted(analyzer.analyze_photo(decoded), key=lambda face: face.box)

    assert len(faces) == 2
    for face, ((x, y), side, _) in zip(faces, drawn, strict=True):
        assert_near(face.box, (x - side // 2, y - side // 2, x + side // 2, y + side // 2))
