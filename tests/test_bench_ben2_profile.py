"""The BEN2 profile summary: FLOPs per node from recorded shapes, time and FLOPs by op type, the table;
and a real onnxruntime profile of a small graph whose FLOPs are known."""

from __future__ import annotations

import numpy as np
import pytest

from devtools.bench import ben2_profile


def _node(op, dur_us, ts, inputs, outputs):
    return {"cat": "Node", "name": f"{op}_{ts}_kernel_time", "dur": dur_us, "ts": ts,
            "args": {"op_name": op, "node_index": str(ts), "input_type_shape": [{"float": s} for s in inputs],
                     "output_type_shape": [{"float": s} for s in outputs]}}


def test_node_flops_counts_multiply_adds_of_products_only():
    assert ben2_profile.node_flops("MatMul", [[4, 8, 16], [16, 32]], [[4, 8, 32]]) == 2 * 4 * 8 * 32 * 16
    # a 3×3 convolution, 8 input channels per group, onto 2×16×10×10
    assert ben2_profile.node_flops("FusedConv", [[2, 8, 12, 12], [16, 8, 3, 3]], [[2, 16, 10, 10]]) == 2 * 3200 * 72
    assert ben2_profile.node_flops("Gemm", [[5, 7], [7, 3]], [[5, 3]]) == 2 * 15 * 7
    assert ben2_profile.node_flops("Softmax", [[4, 64]], [[4, 64]]) == 0
    # a convolution whose weight the profiler left out (pre-packed) counts from the weight given
    assert ben2_profile.node_flops("QLinearConv", [[2, 8, 12, 12], [], []], [[2, 16, 10, 10]]) == 0
    assert ben2_profile.node_flops("QLinearConv", [[2, 8, 12, 12], [], []], [[2, 16, 10, 10]], [16, 8, 3, 3]) == 2 * 3200 * 72


def test_summary_keeps_the_last_run_and_sorts_by_time():
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 90},
        _node("MatMul", 500, 10, [[2, 3], [3, 4]], [[2, 4]]),  # warm-up run: ignored
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 90},
        _node("MatMul", 2000, 110, [[10, 20], [20, 30]], [[10, 30]]),
        _node("Softmax", 6000, 120, [[10, 30]], [[10, 30]]),
        _node("MatMul", 2000, 130, [[10, 20], [20, 30]], [[10, 30]]),
    ]
    rows = ben2_profile.summarise(events)
    assert [r["op"] for r in rows] == ["Softmax", "MatMul"]
    matmul = rows[1]
    assert matmul["ms"] == pytest.approx(4.0)
    assert matmul["time_share"] == pytest.approx(0.4)
    assert matmul["flop_share"] == pytest.approx(1.0)
    assert matmul["gflop"] == pytest.approx(2 * 2 * 10 * 30 * 20 / 1e9)
    assert matmul["gflops"] == pytest.approx(matmul["gflop"] / 0.004)
    lines = ben2_profile.format_table(rows, top=1)
    assert lines[2].startswith("| Softmax | 6 | 60.0% | 0.0 | 0.0% |")
    assert lines[3].startswith("| 1 other op types | 4 | 40.0% |")


def test_a_real_profile_counts_a_small_graphs_flops(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.random((8, 3, 3, 3), dtype=np.float32), "w")
    proj = numpy_helper.from_array(rng.random((6, 5), dtype=np.float32), "p")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("MatMul", ["y", "p"], ["z"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 6, 5])], initializer=[weight, proj])
    path = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))

    events, weights = ben2_profile.profile(path, threads=1, optimization="basic",
                                           feed={"x": rng.random((1, 3, 8, 8), dtype=np.float32)})
    rows = {r["op"]: r for r in ben2_profile.summarise(events, weights)}
    conv = 2 * (8 * 6 * 6) * (3 * 3 * 3)
    matmul = 2 * (8 * 6 * 5) * 6
    assert sum(r["gflop"] for r in rows.values()) * 1e9 == pytest.approx(conv + matmul)
    assert rows["MatMul"]["gflop"] * 1e9 == pytest.approx(matmul)


def test_an_int8_profile_counts_its_convolutions(tmp_path):
    """Regression: onnxruntime's profiler leaves a pre-packed int8 convolution's weight out of the
    recorded inputs, and the table showed QLinearConv at 0 GFLOP."""
    pytest.importorskip("onnxruntime.quantization")
    from devtools.bench.ben2_int8 import quantize
    from devtools.synthetic.ben2 import build_ben2

    rng = np.random.default_rng(2)
    fp32 = build_ben2(tmp_path / "tiny.onnx", size=32, depth=2)
    int8 = quantize(fp32, tmp_path / "tiny.int8.onnx", (rng.random((32, 32, 3), dtype=np.float32) for _ in range(2)))
    feed = {"input": rng.random((1, 3, 32, 32), dtype=np.float32)}
    reference = {r["op"]: r["gflop"] for r in ben2_profile.summarise(*ben2_profile.profile(fp32, threads=1, optimization="basic", feed=feed))}
    rows = {r["op"]: r["gflop"] for r in ben2_profile.summarise(*ben2_profile.profile(int8, threads=1, optimization="extended", feed=feed))}
    assert rows.get("QLinearConv", 0) > 0
    convs = sum(v for op, v in reference.items() if "Conv" in op)
    assert rows["QLinearConv"] == pytest.approx(convs)  # the same convolutions, now in int8
