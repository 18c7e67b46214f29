"""Build a small TEST model pack that stands in for buffalo_l. It is NOT buffalo_l.

The pack has buffalo_l's file names and input/output contract, so insightface's own code
(`model_zoo`, `FaceAnalysis`) loads and runs it, but its hand-set weights know one thing: the
"face marker" that `draw_face` paints, a square mosaic of magenta-family colours whose colours
are the marker's identity.

`det_10g.onnx` (SCRFD contract: input "input.1" [1,3,?,?], nine outputs: scores, box distances
and keypoints for strides 8/16/32, two anchors per position) masks the marker's colours,
then computes, in a window around each anchor, the marked area and its first and second
moments. An isolated square of side L has area L², centroid at its centre and variance L²/12
along each axis; the anchor nearest the centroid scores high only when all three agree, and the
box and five landmarks follow from the centroid and L. The second anchor of each position
always scores 0.

`w600k_r50.onnx` (ArcFace contract: [N,3,112,112] -> [N,512]) averages the centre of each
cell of a 4×4 grid over the aligned crop and multiplies the 48 colour means by a fixed, seeded
projection, so crops of the same identity give the same embedding.

    python -m devstack.make_test_model_pack --out var/models/buffalo_l
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from insightface.utils.face_align import arcface_dst
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

DETECTOR_FILE = "det_10g.onnx"
RECOGNIZER_FILE = "w600k_r50.onnx"
OPSET = 17
IR_VERSION = 8

# Landmarks sit where ArcFace's alignment template puts them, so `norm_crop` maps the marker
# square onto the whole 112×112 crop.
LANDMARKS = arcface_dst / 112.0

GRID = 4
# Every palette colour has R + B - 2G = 255 and grey has 0: the detector's mask is that affine
# function, so blending two marker colours (or a marker and grey, by area) keeps the mask exact.
PALETTE = (
    (255, 0, 0),
    (0, 0, 255),
    (128, 0, 127),
    (255, 40, 80),
    (80, 40, 255),
    (255, 90, 180),
    (180, 90, 255),
    (250, 125, 255),
)
# (R + B - 2G) in the detector's blob units (1/128) over which the mask ramps from 0 to 1.
MASK_LOW, MASK_HIGH = 0.7, 1.3
MIN_SIDE = 9.0
# stride -> half-width of the moment window, in cells of that stride
WINDOWS = {8: 6, 16: 6, 32: 7}
VARIANCE_TOLERANCE = 0.1

EMBEDDING_SEED = 112
CROP_MARGIN, CELL, CELL_CORE = 4, 28, 20


def identity_colours(identity: int) -> list[tuple[int, int, int]]:
    """The GRID×GRID cell colours, row by row, of the marker for `identity`."""
    picks = np.random.default_rng(identity).integers(0, len(PALETTE), GRID * GRID)
    return [PALETTE[i] for i in picks]


def draw_face(image: Image.Image, center: tuple[int, int], size: int, identity: int) -> None:
    """Paint a face marker of side `size` centred on `center` into an RGB image.

    The marker covers [cx - size // 2, cx - size // 2 + size) in each axis; the detector's box
    is that square.
    """
    left, top = center[0] - size // 2, center[1] - size // 2
    edges = [round(size * k / GRID) for k in range(GRID + 1)]
    draw = ImageDraw.Draw(image)
    for k, colour in enumerate(identity_colours(identity)):
        row, col = divmod(k, GRID)
        box = (left + edges[col], top + edges[row], left + edges[col + 1], top + edges[row + 1])
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)


class GraphBuilder:
    """Collects nodes and constants; node names avoid the "Sub"/"Mul" prefixes by which
    ArcFaceONNX recognises MXNet models (and would then skip input normalisation)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, value: np.ndarray | float | list[int]) -> str:
        name = f"const_{len(self.initializers)}"
        dtype = np.int64 if isinstance(value, list) else np.float32
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(
        self,
        op_type: str,
        *inputs: str,
        outputs: int = 1,
        output_name: str | None = None,
        **attrs: object,
    ) -> str | list[str]:
        """The node's output name (`output_name` if given), or its `outputs` names."""
        stem = f"{op_type.lower()}_{len(self.nodes)}"
        names = [output_name] if output_name else [f"{stem}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=stem, **attrs))
        return names[0] if outputs == 1 else names

    def model(
        self, inputs: list, outputs: list, name: str = "test_pack", doc_string: str = ""
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        model.doc_string = doc_string
        onnx.checker.check_model(model, full_check=True)
        return model


def _cell_kernel(stride: int) -> np.ndarray:
    """Per cell: area, Σx, Σy, Σx², Σy² of marked pixels, x and y from the cell's corner."""
    centres = np.arange(stride, dtype=np.float32) + 0.5
    x = np.tile(centres, (stride, 1))
    y = x.T
    return np.stack([np.ones_like(x), x, y, x * x, y * y])[:, None]


def _window_kernel(stride: int, half: int) -> np.ndarray:
    """Sums cell moments over 2·half cells each way, re-centred on the anchor."""
    offsets = (np.arange(2 * half, dtype=np.float32) - half) * stride
    ox = np.tile(offsets, (2 * half, 1))
    oy = ox.T
    one, zero = np.ones_like(ox), np.zeros_like(ox)
    # input channels: area, Σx, Σy, Σx², Σy²
    rows = [
        [one, zero, zero, zero, zero],
        [ox, one, zero, zero, zero],
        [oy, zero, one, zero, zero],
        [ox * ox, 2 * ox, zero, one, zero],
        [oy * oy, zero, 2 * oy, zero, one],
    ]
    return np.array(rows, dtype=np.float32)


def _geometry_kernels(stride: int) -> tuple[np.ndarray, np.ndarray]:
    """1×1 kernels from (dx, dy, L) to box distances and landmark offsets, for two anchors."""
    bbox = np.array([[-1, 0, 0.5], [0, -1, 0.5], [1, 0, 0.5], [0, 1, 0.5]], np.float32)
    kps = np.zeros((10, 3), np.float32)
    kps[0::2, 0] = 1
    kps[1::2, 1] = 1
    kps[0::2, 2] = LANDMARKS[:, 0] - 0.5
    kps[1::2, 2] = LANDMARKS[:, 1] - 0.5
    return tuple(np.tile(k, (2, 1))[:, :, None, None] / stride for k in (bbox, kps))


def _marker_mask(g: GraphBuilder, image: str) -> str:
    weights = np.array([1.0, -2.0, 1.0], np.float32).reshape(1, 3, 1, 1)
    magenta = g.op("Conv", image, g.const(weights))
    scale = 1.0 / (MASK_HIGH - MASK_LOW)
    ramp = g.op("Mul", g.op("Sub", magenta, g.const(MASK_LOW)), g.const(scale))
    return g.op("Clip", ramp, g.const(0.0), g.const(1.0))


def _band(g: GraphBuilder, value: str, low: float, high: float) -> str:
    """1 inside [low, high], falling to 0 within one unit outside it."""
    above = g.op("Clip", g.op("Sub", value, g.const(low - 1)), g.const(0.0), g.const(1.0))
    below = g.op("Clip", g.op("Sub", g.const(high + 1), value), g.const(0.0), g.const(1.0))
    return g.op("Mul", above, below)


def _variance_agreement(g: GraphBuilder, variance: str, area: str) -> str:
    """1 while 12·variance/area (1 for an isolated square) is within the tolerance of 1,
    0 beyond twice the tolerance: another marker in the window spreads the variance."""
    ratio = g.op("Div", g.op("Mul", variance, g.const(12.0)), area)
    error = g.op("Abs", g.op("Sub", ratio, g.const(1.0)))
    agreement = g.op("Sub", g.const(2.0), g.op("Mul", error, g.const(1 / VARIANCE_TOLERANCE)))
    return g.op("Clip", agreement, g.const(0.0), g.const(1.0))


def _stride_head(g: GraphBuilder, mask: str, stride: int, half: int) -> tuple[str, str, str]:
    """Scores [N, 1], box distances [N, 4] and landmark offsets [N, 10] for one stride."""
    area, dx, dy, var_x, var_y = _window_moments(g, mask, stride, half)
    side = g.op("Sqrt", area)
    score = g.op("Exp", g.op("Mul", _squared_norm(g, dx, dy), g.const(-0.5 / stride**2)))
    for factor in (
        _inside(g, mask, stride),
        _band(g, side, MIN_SIDE, (2 * half - 3) * stride),
        _variance_agreement(g, var_x, area),
        _variance_agreement(g, var_y, area),
    ):
        score = g.op("Mul", score, factor)
    geometry = g.op("Concat", dx, dy, side, axis=1)
    bbox_kernel, kps_kernel = _geometry_kernels(stride)
    anchors = np.array([1.0, 0.0], np.float32).reshape(2, 1, 1, 1)
    heads = (
        (g.op("Conv", score, g.const(anchors)), 1),
        (g.op("Conv", geometry, g.const(bbox_kernel)), 4),
        (g.op("Conv", geometry, g.const(kps_kernel)), 10),
    )
    return tuple(
        g.op("Reshape", g.op("Transpose", head, perm=[0, 2, 3, 1]), g.const([-1, width]))
        for head, width in heads
    )


def _window_moments(g: GraphBuilder, mask: str, stride: int, half: int) -> list[str]:
    """Marked area, centroid offset from the anchor and variances, per anchor."""
    cells = g.op("Conv", mask, g.const(_cell_kernel(stride)), strides=[stride, stride])
    # Cells [j - half, j + half) around the anchor at cell corner j.
    pads = [half, half, half - 1, half - 1]
    window = g.op("Conv", cells, g.const(_window_kernel(stride, half)), pads=pads)
    area_raw, mx, my, mxx, myy = g.op("Split", window, axis=1, outputs=5)
    area = g.op("Max", area_raw, g.const(1.0))
    dx, dy = g.op("Div", mx, area), g.op("Div", my, area)
    var_x = g.op("Sub", g.op("Div", mxx, area), g.op("Mul", dx, dx))
    var_y = g.op("Sub", g.op("Div", myy, area), g.op("Mul", dy, dy))
    return [area, dx, dy, var_x, var_y]


def _squared_norm(g: GraphBuilder, x: str, y: str) -> str:
    return g.op("Add", g.op("Mul", x, x), g.op("Mul", y, y))


def _inside(g: GraphBuilder, mask: str, stride: int) -> str:
    """The marked fraction of the stride×stride square centred on each anchor."""
    kernel = np.full((1, 1, stride, stride), 1.0 / stride**2, np.float32)
    pads = [stride // 2, stride // 2, 0, 0]
    return g.op("Conv", mask, g.const(kernel), strides=[stride, stride], pads=pads)


def detector_model() -> onnx.ModelProto:
    g = GraphBuilder()
    mask = _marker_mask(g, "input.1")
    heads = [_stride_head(g, mask, stride, half) for stride, half in WINDOWS.items()]
    outputs = []
    # SCRFD order: all scores, then all box distances, then all keypoints.
    for kind, (name_stem, width) in enumerate((("score", 1), ("bbox", 4), ("kps", 10))):
        for stride, head in zip(WINDOWS, heads, strict=True):
            name = f"{name_stem}_{stride}"
            g.nodes.append(helper.make_node("Identity", [head[kind]], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width]))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])
    return g.model([image], outputs)


def recognizer_model() -> onnx.ModelProto:
    g = GraphBuilder()
    crop = g.op(
        "Slice",
        "input.1",
        g.const([CROP_MARGIN, CROP_MARGIN]),
        g.const([112 - CROP_MARGIN, 112 - CROP_MARGIN]),
        g.const([2, 3]),
    )
    cells = g.op("AveragePool", crop, kernel_shape=[CELL_CORE] * 2, strides=[CELL] * 2)
    # The palette shares a lot of colour; removing its mean leaves what tells identities apart.
    palette_mean = (np.mean(PALETTE, axis=0, dtype=np.float32) - 127.5) / 127.5
    centred = g.op("Sub", cells, g.const(palette_mean.reshape(1, 3, 1, 1)))
    features = g.op("Flatten", centred, axis=1)
    rng = np.random.default_rng(EMBEDDING_SEED)
    projection = rng.standard_normal((3 * GRID * GRID, 512)).astype(np.float32)
    g.nodes.append(helper.make_node("MatMul", [features, g.const(projection)], ["embedding"]))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [None, 3, 112, 112])
    embedding = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 512])
    return g.model([image], [embedding])


def build_pack(directory: Path) -> Path:
    """Write the TEST pack's two models into `directory` (created if missing); return it."""
    return write_pack(directory, detector_model(), recognizer_model())


def write_pack(directory: Path, detector: onnx.ModelProto, recognizer: onnx.ModelProto) -> Path:
    """Save two models under buffalo_l's file names in `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(detector, directory / DETECTOR_FILE)
    onnx.save(recognizer, directory / RECOGNIZER_FILE)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/models/buffalo_l"))
    directory = build_pack(parser.parse_args().out)
    size = sum(path.stat().st_size for path in directory.glob("*.onnx"))
    print(f"TEST model pack (NOT buffalo_l, {size / 1024:.0f} KiB) written to {directory}")


if __name__ == "__main__":
    main()
