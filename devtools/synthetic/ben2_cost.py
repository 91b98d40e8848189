"""An ONNX graph with BEN2's signature and BEN2's cost per image, for benchmarks without the real file.

``build_ben2_cost(path)`` writes ``input`` float32 ``[1,3,1024,1024]`` → ``output`` ``[1,1,1024,1024]``
(a probability map) computed the way BEN2 spends its time: five 512² views of the image (the whole
image resized, and its four quadrants) go as a batch of 5 through a Swin-B-style backbone —
4×4 patch embedding, windowed multi-head self-attention + 4× MLP blocks (8×8-token windows;
widths 128/256/512/1024, depths 2/2/18/2, patch merging between stages) — then a refinement
decoder of 3×3 convolutions (256 channels at 128² per view) fed by all four stages, a 1-channel
head upsampled to 512², and the views merged back into one 1024² map through a sigmoid.
Weights are random (float32); the output is noise in 0..1, the cost is the point.

``count_flops(model)`` walks the graph with ONNX shape inference and counts multiply-adds of
``MatMul``, ``Gemm`` and ``Conv`` as 2 FLOP each (element-wise operations — softmax, layer norm,
GELU, resizes — are not counted; they are well under 1 % here). The default configuration counts
≈ 2.15 TFLOP per image, BEN2's published cost; the benchmark prints the count it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET_FLOP = 2.15e12


@dataclass(frozen=True)
class CostShape:
    size: int = 1024  # input side; views are size/2
    patch: int = 4
    widths: tuple[int, ...] = (128, 256, 512, 1024)
    depths: tuple[int, ...] = (2, 2, 18, 2)
    heads: tuple[int, ...] = (4, 8, 16, 32)
    window: int = 8
    mlp_ratio: int = 4
    decoder_width: int = 256
    decoder_convs: int = 14  # 3×3 convolutions at the first stage's resolution


SHAPES = {
    "ben2": CostShape(),
    # A few MFLOP with the same structure, for tests of the graph itself.
    "tiny": CostShape(size=128, widths=(8, 16, 32, 64), depths=(1, 1, 2, 1), heads=(1, 2, 2, 4), window=4, decoder_width=8, decoder_convs=2),
}

VIEWS = 5


class _Graph:
    """Small helper collecting ONNX nodes and random initializers."""

    def __init__(self, seed: int):
        self.nodes = []
        self.inits = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array: np.ndarray, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values, hint: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def weight(self, shape: tuple[int, ...], fan_in: int, hint: str = "w") -> str:
        data = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(1.0 / np.sqrt(fan_in))
        return self.const(data, hint)

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def layer_norm(self, x: str, dim: int) -> str:
        return self.op("LayerNormalization", [x, self.const(np.ones(dim, np.float32), "ln_g"), self.const(np.zeros(dim, np.float32), "ln_b")], axis=-1)

    def linear(self, x: str, cin: int, cout: int) -> str:
        y = self.op("MatMul", [x, self.weight((cin, cout), cin)])
        return self.op("Add", [y, self.const(np.zeros(cout, np.float32), "bias")])

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        w = self.weight((cout, cin, k, k), cin * k * k)
        b = self.const(np.zeros(cout, np.float32), "bias")
        pad = (k - 1) // 2 if stride == 1 else 0
        return self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)


def _partition(g: _Graph, x: str, batch: int, res: int, w: int, dim: int) -> str:
    """``[B,res,res,C]`` → windows ``[B·nW, w·w, C]``."""
    n = res // w
    x = g.op("Reshape", [x, g.ints([batch, n, w, n, w, dim])])
    x = g.op("Transpose", [x], perm=[0, 1, 3, 2, 4, 5])
    return g.op("Reshape", [x, g.ints([batch * n * n, w * w, dim])])


def _unpartition(g: _Graph, x: str, batch: int, res: int, w: int, dim: int) -> str:
    n = res // w
    x = g.op("Reshape", [x, g.ints([batch, n, n, w, w, dim])])
    x = g.op("Transpose", [x], perm=[0, 1, 3, 2, 4, 5])
    return g.op("Reshape", [x, g.ints([batch, res, res, dim])])


def _block(g: _Graph, x: str, windows: int, tokens: int, dim: int, heads: int, mlp_ratio: int) -> str:
    """Pre-norm windowed attention + MLP on ``[windows, tokens, dim]``."""
    head_dim = dim // heads
    h = g.layer_norm(x, dim)
    qkv = g.linear(h, dim, 3 * dim)
    qkv = g.op("Reshape", [qkv, g.ints([windows, tokens, 3, heads, head_dim])])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, W, heads, N, d]
    q, k, v = (g.op("Gather", [qkv, g.ints(i)], axis=0) for i in (0, 1, 2))
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, kt])
    scores = g.op("Mul", [scores, g.const(np.float32(head_dim**-0.5), "scale")])
    attn = g.op("Softmax", [scores], axis=-1)
    out = g.op("MatMul", [attn, v])  # [W, heads, N, d]
    out = g.op("Transpose", [out], perm=[0, 2, 1, 3])
    out = g.op("Reshape", [out, g.ints([windows, tokens, dim])])
    x = g.op("Add", [x, g.linear(out, dim, dim)])
    h = g.layer_norm(x, dim)
    h = _gelu(g, g.linear(h, dim, mlp_ratio * dim))
    return g.op("Add", [x, g.linear(h, mlp_ratio * dim, dim)])


def _gelu(g: _Graph, x: str) -> str:
    """x·sigmoid(1.702x): the GELU approximation, in opset-17 operators."""
    return g.op("Mul", [x, g.op("Sigmoid", [g.op("Mul", [x, g.const(np.float32(1.702), "gelu")])])])


def build_ben2_cost(path: str | Path, *, shape: str = "ben2", seed: int = 0) -> Path:
    """Write the graph (``SHAPES[shape]``) to ``path`` and return it."""
    import onnx
    from onnx import TensorProto, helper

    s = SHAPES[shape]
    view = s.size // 2
    g = _Graph(seed)
    x = "input"

    # five 512² views: the whole image resized, then the four quadrants
    whole = g.op("Resize", [x, "", g.const(np.array([1, 1, 0.5, 0.5], np.float32), "scales")], mode="linear")
    quads = []
    for top in (0, view):
        for left in (0, view):
            quads.append(g.op("Slice", [x, g.ints([top, left]), g.ints([top + view, left + view]), g.ints([2, 3])]))
    views = g.op("Concat", [whole, *quads], axis=0)  # [5,3,view,view]

    feat = g.conv(views, 3, s.widths[0], s.patch, stride=s.patch)  # [5,C,R,R]
    res = view // s.patch
    x = g.op("Transpose", [feat], perm=[0, 2, 3, 1])  # NHWC
    stage_maps = []
    for i, (dim, depth, heads) in enumerate(zip(s.widths, s.depths, s.heads)):
        if i > 0:  # patch merging: 2×2 neighbours → 4C → LayerNorm → 2C
            prev = s.widths[i - 1]
            x = g.op("Reshape", [x, g.ints([VIEWS, res // 2, 2, res // 2, 2, prev])])
            x = g.op("Transpose", [x], perm=[0, 1, 3, 2, 4, 5])
            res //= 2
            x = g.op("Reshape", [x, g.ints([VIEWS, res, res, 4 * prev])])
            x = g.op("MatMul", [g.layer_norm(x, 4 * prev), g.weight((4 * prev, dim), 4 * prev)])
        w = min(s.window, res)
        windows = VIEWS * (res // w) ** 2
        t = _partition(g, x, VIEWS, res, w, dim)
        for _ in range(depth):
            t = _block(g, t, windows, w * w, dim, heads, s.mlp_ratio)
        x = _unpartition(g, t, VIEWS, res, w, dim)
        stage_maps.append((g.op("Transpose", [x], perm=[0, 3, 1, 2]), dim, res))

    # decoder: every stage to decoder_width at the first stage's resolution, summed, then refined
    first = view // s.patch
    fused = None
    for fmap, dim, r in stage_maps:
        y = g.conv(fmap, dim, s.decoder_width, 1)
        if r != first:
            y = g.op("Resize", [y, "", g.const(np.array([1, 1, first / r, first / r], np.float32), "scales")], mode="linear")
        fused = y if fused is None else g.op("Add", [fused, y])
    y = fused
    for _ in range(s.decoder_convs):
        y = g.op("Relu", [g.conv(y, s.decoder_width, s.decoder_width, 3)])
    logits = g.conv(y, s.decoder_width, 1, 1)
    logits = g.op("Resize", [logits, "", g.const(np.array([1, 1, s.patch, s.patch], np.float32), "scales")], mode="linear")  # [5,1,view,view]

    # merge: the whole view upsampled, the quadrants put back, averaged
    parts = [g.op("Slice", [logits, g.ints([i]), g.ints([i + 1]), g.ints([0])]) for i in range(VIEWS)]
    global_map = g.op("Resize", [parts[0], "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="linear")
    top = g.op("Concat", [parts[1], parts[2]], axis=3)
    bottom = g.op("Concat", [parts[3], parts[4]], axis=3)
    local_map = g.op("Concat", [top, bottom], axis=2)
    mixed = g.op("Mul", [g.op("Add", [global_map, local_map]), g.const(np.float32(0.5), "half")])
    g.nodes.append(helper.make_node("Sigmoid", [mixed], ["output"]))

    graph = helper.make_graph(
        g.nodes,
        "ben2_cost",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, s.size, s.size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, s.size, s.size])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return path


def count_flops(model) -> int:
    """FLOP of one run of an ONNX model (path or ModelProto): 2 per multiply-add of MatMul, Gemm and Conv."""
    import onnx
    from onnx import shape_inference

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    shapes: dict[str, list[int]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        shapes[info.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    def dims(name: str) -> list[int]:
        found = shapes.get(name)
        if found is None or any(d <= 0 for d in found):
            raise ValueError(f"shape of {name!r} is unknown after shape inference")
        return found

    total = 0
    for node in inferred.graph.node:
        if node.op_type == "MatMul":
            a, b = dims(node.input[0]), dims(node.input[1])
            out = dims(node.output[0])
            k = a[-1]
            assert b[-2] == k, (node.name, a, b)
            total += 2 * int(np.prod(out, dtype=np.int64)) * k
        elif node.op_type == "Gemm":
            a = dims(node.input[0])
            out = dims(node.output[0])
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            total += 2 * int(np.prod(out, dtype=np.int64)) * k
        elif node.op_type == "Conv":
            w = dims(node.input[1])  # [Cout, Cin/group, kh, kw]: multiply-adds per output element
            out = dims(node.output[0])
            total += 2 * int(np.prod(out, dtype=np.int64)) * w[1] * w[2] * w[3]
    return int(total)
