"""The BEN2-cost ONNX graph: BEN2's signature, and a FLOP count that matches a count done by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cutout_guard.engines.ben2 import Ben2
from devtools.synthetic.ben2_cost import SHAPES, TARGET_FLOP, VIEWS, build_ben2_cost, count_flops


def flops_by_hand(s) -> int:
    """Multiply-adds ×2 of the architecture the module docstring describes, written out here."""
    view = s.size // 2
    res = view // s.patch
    total = 2 * VIEWS * res * res * s.widths[0] * 3 * s.patch * s.patch  # patch embedding
    for i, (dim, depth) in enumerate(zip(s.widths, s.depths)):
        if i > 0:
            res //= 2
            total += 2 * VIEWS * res * res * 4 * s.widths[i - 1] * dim  # patch merging
        tokens = VIEWS * res * res
        n = min(s.window, res) ** 2  # tokens per window
        per_block = (
            2 * tokens * dim * 3 * dim  # q, k, v
            + 2 * tokens * n * dim * 2  # q·kᵀ and attention·v over each window
            + 2 * tokens * dim * dim  # output projection
            + 2 * tokens * dim * s.mlp_ratio * dim * 2  # MLP up and down
        )
        total += depth * per_block
    first = view // s.patch
    total += sum(2 * VIEWS * (first >> i) ** 2 * dim * s.decoder_width for i, dim in enumerate(s.widths))  # 1×1 laterals
    total += s.decoder_convs * 2 * VIEWS * first * first * s.decoder_width * s.decoder_width * 9  # 3×3 refinement
    total += 2 * VIEWS * first * first * s.decoder_width  # 1-channel head
    return total


def test_tiny_graph_has_ben2_signature_and_runs(tmp_path):
    path = build_ben2_cost(tmp_path / "tiny.onnx", shape="tiny")
    assert count_flops(path) == flops_by_hand(SHAPES["tiny"])
    ben2 = Ben2.load(path)
    assert ben2.input_size == 128
    alpha = ben2.matte(np.random.default_rng(0).random((70, 90, 3), dtype=np.float32))
    assert alpha.shape == (70, 90) and np.isfinite(alpha).all() and 0 <= alpha.min() < alpha.max() <= 1


def test_ben2_shape_costs_2_15_tflop_per_image(tmp_path):
    """The benchmark's stand-in costs what BEN2 costs (2.15 TFLOP at 1024²) within 2 %."""
    counted = count_flops(build_ben2_cost(tmp_path / "ben2_cost.onnx"))
    assert counted == flops_by_hand(SHAPES["ben2"])
    assert counted == pytest.approx(TARGET_FLOP, rel=0.02)


def test_count_flops_counts_matmul_gemm_and_conv():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),  # [2,3,4]·[4,5]: 2·(2·3·5)·4
        helper.make_node("Gemm", ["a2", "w2"], ["b"]),  # [6,5]·[5,7]: 2·6·7·5
        helper.make_node("Conv", ["img", "k"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2),  # 2·(1·4·8·8)·(1·3·3)
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("a2", TensorProto.FLOAT, [6, 5]),
            helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, 8, 8]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b", "c")],
        initializer=[
            numpy_helper.from_array(np.zeros((4, 5), np.float32), "w1"),
            numpy_helper.from_array(np.zeros((5, 7), np.float32), "w2"),
            numpy_helper.from_array(np.zeros((4, 1, 3, 3), np.float32), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert count_flops(model) == 2 * 30 * 4 + 2 * 42 * 5 + 2 * 256 * 9
