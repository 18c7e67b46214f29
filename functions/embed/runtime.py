"""Every onnxruntime option the embed function uses, in one place."""

from __future__ import annotations

import onnxruntime as ort

from functions.embed.settings import EmbedSettings

CPU = "CPUExecutionProvider"


def session_options(settings: EmbedSettings) -> ort.SessionOptions:
    """Options of the sessions that serve requests.

    Intra-op threads equal the pod's CPU request and inter-op is 1, so one inference uses every
    core the pod is given and no more; FaceAnalyzer runs one inference at a time.
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


def providers(settings: EmbedSettings) -> list[str]:
    """The configured execution providers that this onnxruntime build has, in order.

    The default lists CUDA first: the onnxruntime-gpu build has it and runs there, the CPU
    build (`onnxruntime`) does not and runs on CPU.
    """
    available = ort.get_available_providers()
    chosen = [name for name in settings.providers if name in available]
    if not chosen:
        raise RuntimeError(
            f"none of the configured providers {list(settings.providers)} is available; "
            f"onnxruntime has {available}"
        )
    return chosen
