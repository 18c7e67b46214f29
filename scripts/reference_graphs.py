"""RANDOM-WEIGHT stand-ins for buffalo_l's two models, for benchmarks. They are NOT buffalo_l.

Each graph has the architecture, compute and input/output contract of the model it stands in
for, so onnxruntime does the same work as with the real pack, and insightface's own code
(`ModelRouter`, `FaceAnalysis`) loads and runs them; the weights are random.

`det_10g.onnx`: SCRFD-10GF with keypoints (ResNetV1e backbone: deep stem, BasicBlocks
(3, 4, 2, 3) of widths (56, 88, 88, 224), average-pool shortcuts; PAFPN neck of width 56; one
head per stride of three 3×3 convs of width 80, then 3×3 score, box and keypoint convs for two
anchors), BatchNorm folded into the convs as in the exported file. Input "input.1" [1,3,?,?];
nine outputs in SCRFD's order: scores [N,1], box distances [N,4] and keypoints [N,10] for strides
8, 16 and 32. Random weights find no faces, so the faces come from the TEST pack's marker
detector (devstack/make_test_model_pack.py), which runs beside the backbone on the same input:
each output is the marker branch's plus the real head's times `HEAD_WEIGHT`. Every output
thereby depends on the whole backbone at run time, so onnxruntime cannot prune or fold it,
while the head moves a score by at most 1e-6. A photo with N markers (draw_face) has N faces.

`w600k_r50.onnx`: ArcFace IResNet-50 (blocks (3, 4, 14, 3) of widths (64, 128, 256, 512),
BatchNorm-PReLU pre-activation, BatchNorm folded into the convs that precede one), input
"input.1" [None,3,112,112], output [None,512]. Like the exported original it has no Sub/Mul
normalisation nodes, so insightface feeds it (pixel - 127.5) / 127.5.

Published compute counts multiply-accumulates (MACs): IResNet-50 is "6.3 GFLOPs" at 112×112 and
SCRFD-10GF "10 GFLOPs" at VGA (640×480); at the 640×640 the embed function detects at, the
detector does 4/3 of that.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference

from devstack import make_test_model_pack
from devstack.make_test_model_pack import DETECTOR_FILE, RECOGNIZER_FILE, GraphBuilder

PACK_NAME = "buffalo_l-architecture-random-weights"

SCRFD_STEM = 56
# (width, blocks, stride) of each ResNetV1e stage; stages 2-4 feed the neck.
SCRFD_STAGES = ((56, 3, 1), (88, 4, 2), (88, 2, 2), (224, 3, 2))
SCRFD_NECK = 56
SCRFD_HEAD = 80
SCRFD_HEAD_CONVS = 3
STRIDES = (8, 16, 32)
ANCHORS = 2
# (name, values per anchor) of SCRFD's outputs, in its order.
SCRFD_OUTPUTS = (("score", 1), ("bbox", 4), ("kps", 10))
HEAD_WEIGHT = 1e-6

IRESNET_STEM = 64
# (width, blocks) of each IResNet-50 stage; each stage starts with a stride-2 block.
IRESNET_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
EMBEDDING_SIZE = 512
CROP = 112

DETECTOR_SEED = 10
RECOGNIZER_SEED = 50
_BUILDERS = (Path(__file__), Path(make_test_model_pack.__file__))


class _Network(GraphBuilder):
    """The nodes and random weights of one graph."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def conv(
        self, x: str, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, gain: float = 1.0
    ) -> str:
        """A convolution with a BatchNorm folded in: He-initialised weights and a bias."""
        std = gain * math.sqrt(2.0 / (c_in * kernel * kernel))
        weight = self.rng.standard_normal((c_out, c_in, kernel, kernel), np.float32) * std
        bias = self.rng.standard_normal(c_out, np.float32) * 0.01
        return self.op(
            "Conv",
            x,
            self.const(weight),
            self.const(bias),
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[kernel // 2] * 4,
        )

    def batch_norm(self, x: str, c: int, output: str | None = None) -> str:
        """A BatchNorm with no convolution before it to fold into."""
        scale = 1.0 + 0.1 * self.rng.standard_normal(c, np.float32)
        shift = 0.1 * self.rng.standard_normal(c, np.float32)
        zeros, ones = np.zeros(c, np.float32), np.ones(c, np.float32)
        params = [self.const(v) for v in (scale, shift, zeros, ones)]
        return self.op("BatchNormalization", x, *params, output_name=output, epsilon=1e-5)


def _stand_in_doc(architecture: str) -> str:
    return f"RANDOM-WEIGHT stand-in with {architecture}'s architecture, not buffalo_l"


def detector_model() -> onnx.ModelProto:
    """SCRFD-10GF with keypoints, random weights, faces from the marker branch (module doc)."""
    net = _Network(DETECTOR_SEED)
    levels = _pafpn(net, _resnet_v1e(net, "input.1"))
    heads = [_scrfd_head(net, level) for level in levels]
    marker = _marker_branch(net)
    outputs = []
    for kind, (stem, values) in enumerate(SCRFD_OUTPUTS):
        for stride, head in zip(STRIDES, heads, strict=True):
            name = f"{stem}_{stride}"
            weighted = net.op("Mul", head[kind], net.const(HEAD_WEIGHT))
            net.op("Add", marker[name], weighted, output_name=name)
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, values]))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])
    return net.model([image], outputs, "scrfd_10g_bnkps", _stand_in_doc("SCRFD-10GF"))


def _resnet_v1e(net: _Network, image: str) -> list[tuple[str, int]]:
    """The stride-8, -16 and -32 feature maps and their widths."""
    half = SCRFD_STEM // 2
    x = net.op("Relu", net.conv(image, 3, half, stride=2))
    x = net.op("Relu", net.conv(x, half, half))
    x = net.op("Relu", net.conv(x, half, SCRFD_STEM))
    x = net.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in, features = SCRFD_STEM, []
    for c_out, blocks, stride in SCRFD_STAGES:
        for block in range(blocks):
            x = _basic_block(net, x, c_in, c_out, stride if block == 0 else 1)
            c_in = c_out
        features.append((x, c_out))
    return features[1:]


def _basic_block(net: _Network, x: str, c_in: int, c_out: int, stride: int) -> str:
    residual = net.op("Relu", net.conv(x, c_in, c_out, stride=stride))
    residual = net.conv(residual, c_out, c_out, gain=0.5)
    shortcut = x
    if stride != 1:
        shortcut = net.op(
            "AveragePool",
            shortcut,
            kernel_shape=[stride, stride],
            strides=[stride, stride],
            ceil_mode=1,
            count_include_pad=0,
        )
    if stride != 1 or c_in != c_out:
        shortcut = net.conv(shortcut, c_in, c_out, kernel=1)
    return net.op("Relu", net.op("Add", residual, shortcut))


def _pafpn(net: _Network, features: list[tuple[str, int]]) -> list[str]:
    """mmdet's PAFPN: lateral 1×1 convs, top-down sums, 3×3 convs, then a bottom-up path."""
    width = SCRFD_NECK
    laterals = [net.conv(x, c_in, width, kernel=1) for x, c_in in features]
    for level in range(len(laterals) - 1, 0, -1):
        upsampled = net.op(
            "Resize",
            laterals[level],
            "",
            net.const(np.array([1, 1, 2, 2], np.float32)),
            mode="nearest",
        )
        laterals[level - 1] = net.op("Add", laterals[level - 1], upsampled)
    inner = [net.conv(x, width, width) for x in laterals]
    for level in range(len(inner) - 1):
        downsampled = net.conv(inner[level], width, width, stride=2)
        inner[level + 1] = net.op("Add", inner[level + 1], downsampled)
    return [inner[0]] + [net.conv(x, width, width) for x in inner[1:]]


def _scrfd_head(net: _Network, x: str) -> tuple[str, str, str]:
    """Scores (after the sigmoid), box distances and keypoints of one stride, each [N, k]."""
    c_in, width = SCRFD_NECK, SCRFD_HEAD
    for _ in range(SCRFD_HEAD_CONVS):
        x = net.op("Relu", net.conv(x, c_in, width))
        c_in = width
    score = net.op("Sigmoid", net.conv(x, width, ANCHORS))
    bbox = net.op("Mul", net.conv(x, width, ANCHORS * 4), net.const(1.0))  # Scale layer
    kps = net.conv(x, width, ANCHORS * 10)
    return tuple(
        net.op("Reshape", net.op("Transpose", head, perm=[0, 2, 3, 1]), net.const([-1, k]))
        for head, (_, k) in zip((score, bbox, kps), SCRFD_OUTPUTS, strict=True)
    )


def _marker_branch(net: _Network) -> dict[str, str]:
    """The TEST pack's detector, reading the same input; its nine outputs by SCRFD name."""
    marker = make_test_model_pack.detector_model().graph
    marker = onnx.compose.add_prefix_graph(marker, "marker/", rename_inputs=False)
    net.nodes.extend(marker.node)
    net.initializers.extend(marker.initializer)
    return {output.name.removeprefix("marker/"): output.name for output in marker.output}


def recognizer_model() -> onnx.ModelProto:
    """ArcFace IResNet-50, random weights: [N,3,112,112] -> [N,512]."""
    net = _Network(RECOGNIZER_SEED)
    c_in = IRESNET_STEM
    x = _prelu(net, net.conv("input.1", 3, c_in), c_in)
    for c_out, blocks in IRESNET_STAGES:
        for block in range(blocks):
            x = _ibasic_block(net, x, c_in, c_out, 2 if block == 0 else 1)
            c_in = c_out
    x = net.op("Flatten", net.batch_norm(x, c_in), axis=1)
    side = CROP // 16
    fc = net.rng.standard_normal((EMBEDDING_SIZE, c_in * side * side), np.float32)
    fc *= math.sqrt(1.0 / (c_in * side * side))
    x = net.op("Gemm", x, net.const(fc), net.const(np.zeros(EMBEDDING_SIZE)), transB=1)
    net.batch_norm(x, EMBEDDING_SIZE, output="embedding")  # ArcFace's features BatchNorm1d
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, CROP, CROP])
    embedding = helper.make_tensor_value_info(
        "embedding", TensorProto.FLOAT, ["None", EMBEDDING_SIZE]
    )
    return net.model([image], [embedding], "iresnet50", _stand_in_doc("IResNet-50"))


def _ibasic_block(net: _Network, x: str, c_in: int, c_out: int, stride: int) -> str:
    residual = net.conv(net.batch_norm(x, c_in), c_in, c_out)
    residual = _prelu(net, residual, c_out)
    residual = net.conv(residual, c_out, c_out, stride=stride, gain=0.5)
    shortcut = x
    if stride != 1 or c_in != c_out:
        shortcut = net.conv(x, c_in, c_out, kernel=1, stride=stride)
    return net.op("Add", residual, shortcut)


def _prelu(net: _Network, x: str, c: int) -> str:
    return net.op("PRelu", x, net.const(np.full((c, 1, 1), 0.25, np.float32)))


def build_pack(directory: Path) -> Path:
    """Write both stand-in models into `directory` (created if missing); return it."""
    return make_test_model_pack.write_pack(directory, detector_model(), recognizer_model())


def builders_version() -> str:
    """Changes whenever the code that builds the graphs changes."""
    digest = hashlib.sha256()
    for path in _BUILDERS:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cached_pack(cache: Path) -> Path:
    """The full-size pack at <cache>/<version>/models/<PACK_NAME>, built on first use.

    Laid out as FaceAnalysis expects: `FaceAnalysis(name=PACK_NAME, root=<cache>/<version>)`.
    """
    directory = cache / builders_version() / "models" / PACK_NAME
    if all((directory / name).is_file() for name in (DETECTOR_FILE, RECOGNIZER_FILE)):
        return directory
    staging = directory.with_name(f"{PACK_NAME}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    build_pack(staging).rename(directory)
    return directory


def multiply_accumulates(model: onnx.ModelProto, input_shape: list[int]) -> int:
    """Multiply-accumulates of the Conv and Gemm nodes for one input of `input_shape`."""
    shapes = _inferred_shapes(model, input_shape)
    weights = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            total += math.prod(shapes[node.output[0]]) * math.prod(weights[node.input[1]][1:])
        elif node.op_type == "Gemm":
            total += math.prod(shapes[node.output[0]]) * shapes[node.input[0]][-1]
    return total


def _inferred_shapes(model: onnx.ModelProto, input_shape: list[int]) -> dict[str, list[int]]:
    """Every tensor's shape, inferred on a copy without the weights' data (shape inference
    needs the data of small tensors only: Reshape's shapes, Resize's scales)."""
    graph = model.graph
    small = [t for t in graph.initializer if math.prod(t.dims) <= 16]
    large = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in graph.initializer
        if math.prod(t.dims) > 16
    ]
    image = helper.make_tensor_value_info(graph.input[0].name, TensorProto.FLOAT, input_shape)
    skeleton = helper.make_model(
        helper.make_graph(graph.node, graph.name, [image, *large], graph.output, small),
        opset_imports=model.opset_import,
    )
    skeleton.ir_version = model.ir_version
    inferred = shape_inference.infer_shapes(skeleton, strict_mode=True).graph
    return {
        info.name: [dim.dim_value for dim in info.type.tensor_type.shape.dim]
        for info in [*inferred.input, *inferred.value_info, *inferred.output]
    }
