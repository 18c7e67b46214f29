"""The embed stage's settings (the shared ones are in functions/common/config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from functions.common.config import Bool, Float, InputLimits, Int, Settings, StrList, env

REQUIRED_MODULES = ("detection", "recognition")
OPTIONAL_MODULES = ("genderage", "landmark_2d_106", "landmark_3d_68")


class EmbedSettings(Settings):
    """Face detection + recognition. Every value that changes an embedding defaults to what the
    production batch job runs: insightface 0.7.3's `FaceAnalysis(name="buffalo_l")`,
    `prepare(ctx_id=0, det_size=(640, 640))`, `get(cv2.imread(path))`."""

    model_root: Path = env(
        "MODEL_ROOT", Path("/models"), "folder of model packs: the pack is `MODEL_ROOT/MODEL_PACK`"
    )
    model_pack: str = env("MODEL_PACK", "buffalo_l", "the pack's folder: its `*.onnx` files")
    modules: StrList = env(
        "MODEL_MODULES",
        REQUIRED_MODULES,
        "pack modules that run, by insightface task name: "
        f"{', '.join(REQUIRED_MODULES)} and any of {', '.join(OPTIONAL_MODULES)} (these add face "
        "attributes and change no embedding; see [embedding.md](embedding.md))",
    )
    det_size: Int = env("DET_SIZE", 640, "detector input size (a positive multiple of 32)")
    det_thresh: Float = env("DET_THRESH", 0.5, "detection score threshold")
    nms_thresh: Float = env("DET_NMS_THRESH", 0.4, "detection NMS threshold")
    max_faces: Int = env(
        "MAX_FACES",
        100,
        "faces kept per photo, best detection score first; production keeps every face",
    )
    normalize_embeddings: Bool = env(
        "EMBEDDING_NORMALIZE", False, "store L2-normalised instead of raw embeddings"
    )
    decode_shrink: Bool = env(
        "DECODE_SHRINK_ON_LOAD",
        False,
        "decode JPEGs far larger than the detector needs at 1/2, 1/4 or 1/8 scale, keeping the "
        "long side at least `DECODE_MIN_SIDE`; off reproduces production's full decode",
    )
    decode_min_side: Int = env(
        "DECODE_MIN_SIDE", 1280, "the long side a shrunk decode keeps at least"
    )
    providers: StrList = env(
        "ORT_PROVIDERS",
        ("CUDAExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider"),
        "onnxruntime execution providers, in order (those the build lacks are skipped): the "
        "GPU image's build has CUDA, the CPU image's OpenVINO (see "
        "[embedding.md](embedding.md))",
    )
    intra_op_threads: Int = env("ORT_INTRA_OP_THREADS", 2, "onnxruntime intra-op threads")
    limits: InputLimits = Field(
        default_factory=InputLimits, description="the input limits (InputLimits)"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        missing = [name for name in REQUIRED_MODULES if name not in self.modules]
        unknown = [name for name in self.modules if name not in REQUIRED_MODULES + OPTIONAL_MODULES]
        if missing or unknown:
            raise ValueError(
                f"MODEL_MODULES must hold {', '.join(REQUIRED_MODULES)} and only these besides: "
                f"{', '.join(OPTIONAL_MODULES)}; got {', '.join(self.modules)}"
            )
        if self.det_size <= 0 or self.det_size % 32:
            raise ValueError(f"DET_SIZE must be a positive multiple of 32, got {self.det_size}")
        if self.max_faces < 1:
            raise ValueError(f"MAX_FACES must be at least 1, got {self.max_faces}")
        return self

    @property
    def model_dir(self) -> Path:
        return self.model_root / self.model_pack

    @property
    def optional_modules(self) -> tuple[str, ...]:
        return tuple(name for name in self.modules if name not in REQUIRED_MODULES)
