"""Every onnxruntime option the embed function uses, in one place."""

from __future__ import annotations

import json

import onnxruntime as ort

from functions.embed.settings import EmbedSettings

CPU = "CPUExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
CUDA = "CUDAExecutionProvider"


def session_options(settings: EmbedSettings) -> ort.SessionOptions:
    """Options of the sessions that serve requests.

    Intra-op threads equal the pod's CPU request and inter-op is 1, so one inference uses every
    core the pod is given and no more; FaceAnalyzer runs one inference at a time. With OpenVINO
    these threads only run what OpenVINO leaves to the CPU provider (nothing in buffalo_l);
    OpenVINO's own threads are set in its options below.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads would otherwise spin between requests on CPU we are billed for.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Errors only, as insightface's FaceAnalysis sets for the buffalo_l models.
    options.log_severity_level = 3
    return options


def openvino_properties(settings: EmbedSettings) -> dict[str, str]:
    """OpenVINO CPU plugin properties: one inference at a time on the pod's threads, in f32.

    INFERENCE_PRECISION_HINT f32 keeps the vectors the CPU provider's: on CPUs with AMX or
    AVX512-BF16 (Sapphire Rapids and later Xeons) OpenVINO's own default is bf16 (cosine
    0.9999 to the CPU provider's embeddings); onnxruntime-openvino 1.24.1 asks for f32 unless
    told otherwise, and this keeps it so whatever a later release does.
    INFERENCE_NUM_THREADS: OpenVINO would otherwise size itself by the node's cores, not the
    pod's CPU limit. ENABLE_CPU_PINNING off: OpenVINO would pin its threads to the first cores
    of the process's CPU mask, the same cores in every pod on a node, and a pinned thread waits
    for its core when another process has it.
    """
    return {
        "INFERENCE_NUM_THREADS": str(settings.intra_op_threads),
        "NUM_STREAMS": "1",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": "NO",
    }


def provider_options(settings: EmbedSettings, chosen: list[str]) -> list[dict[str, str]]:
    """Each chosen provider's options, in the order of `chosen` (onnxruntime's
    `provider_options`); the CPU and CUDA providers keep their defaults."""
    options: dict[str, dict[str, str]] = {
        OPENVINO: {
            "device_type": "CPU",
            # The properties as OpenVINO names them (num_of_threads, num_streams and
            # precision are deprecated since onnxruntime-openvino 1.23).
            "load_config": json.dumps({"CPU": openvino_properties(settings)}),
        }
    }
    return [dict(options.get(name, {})) for name in chosen]


def providers(settings: EmbedSettings) -> list[str]:
    """The configured execution providers that this onnxruntime build has, in order.

    The default lists CUDA, then OpenVINO, then the CPU: onnxruntime-gpu (the GPU image) has
    CUDA and runs there, onnxruntime-openvino (the CPU image) has OpenVINO and runs with it, the
    plain `onnxruntime` build has neither and runs on its CPU provider. The CPU provider stays
    last in any case: it runs whatever node the provider before it does not take.
    """
    available = ort.get_available_providers()
    chosen = [name for name in settings.providers if name in available]
    if not chosen:
        raise RuntimeError(
            f"none of the configured providers {list(settings.providers)} is available; "
            f"onnxruntime has {available}"
        )
    return chosen


def without_accelerators(chosen: list[str]) -> list[str]:
    """The fallback when a session cannot be made with `chosen`: the CPU provider alone, or
    nothing when that was all there was."""
    return [CPU] if chosen != [CPU] and CPU in chosen else []
