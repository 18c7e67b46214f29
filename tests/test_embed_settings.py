import onnxruntime as ort
import pytest

from functions.embed import runtime
from functions.embed.settings import EmbedSettings


def test_defaults_are_the_production_batch_jobs_parameters():
    settings = EmbedSettings()

    assert (settings.model_pack, settings.det_size, settings.det_thresh, settings.nms_thresh) == (
        "buffalo_l",
        640,
        0.5,
        0.4,
    )
    assert settings.modules == ("detection", "recognition")
    assert not settings.normalize_embeddings
    assert not settings.decode_shrink


def test_every_embedding_parameter_is_read_from_the_environment(monkeypatch):
    for name, value in {
        "MODEL_MODULES": "detection,recognition,genderage",
        "DET_SIZE": "480",
        "DET_THRESH": "0.6",
        "DET_NMS_THRESH": "0.3",
        "MAX_FACES": "7",
        "EMBEDDING_NORMALIZE": "true",
        "DECODE_SHRINK_ON_LOAD": "1",
        "DECODE_MIN_SIDE": "960",
        "ORT_PROVIDERS": "CPUExecutionProvider",
    }.items():
        monkeypatch.setenv(name, value)

    settings = EmbedSettings.from_env()

    assert settings.modules == ("detection", "recognition", "genderage")
    assert settings.optional_modules == ("genderage",)
    assert (settings.det_size, settings.det_thresh, settings.nms_thresh) == (480, 0.6, 0.3)
    assert (settings.max_faces, settings.normalize_embeddings) == (7, True)
    assert (settings.decode_shrink, settings.decode_min_side) == (True, 960)
    assert settings.providers == ("CPUExecutionProvider",)


@pytest.mark.parametrize(
    "modules", [("detection",), ("recognition", "genderage"), ("detection", "recognition", "x")]
)
def test_modules_must_include_detection_and_recognition_and_known_ones_only(modules):
    with pytest.raises(ValueError, match="MODEL_MODULES"):
        EmbedSettings(modules=modules)


def test_detection_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="DET_SIZE"):
        EmbedSettings(det_size=500)


def test_a_switch_that_is_not_true_or_false_is_an_error(monkeypatch):
    monkeypatch.setenv("DECODE_SHRINK_ON_LOAD", "sometimes")

    with pytest.raises(ValueError, match="DECODE_SHRINK_ON_LOAD"):
        EmbedSettings.from_env()


def test_default_providers_are_cuda_then_openvino_where_the_build_has_them_then_the_cpu():
    settings = EmbedSettings()

    available = ort.get_available_providers()

    assert runtime.providers(settings) == [
        name for name in (runtime.CUDA, runtime.OPENVINO) if name in available
    ] + [runtime.CPU]
