"""devtools.bench.ben2_int8: static-QDQ quantization of a BEN2 graph, and the masks' agreement measure."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from devtools.bench.ben2_int8 import agreement, attention_matmuls, quantize  # noqa: E402
from devtools.synthetic.ben2 import build_ben2  # noqa: E402


def photos(count: int, size: int = 48):
    rng = np.random.default_rng(1)
    for _ in range(count):
        yield rng.random((size, size + 8, 3), dtype=np.float32)


def test_a_tiny_ben2_graph_is_quantized_and_runs_through_the_engine(tmp_path):
    from cutout_guard.engines.ben2 import Ben2

    fp32 = build_ben2(tmp_path / "tiny.onnx", size=32, depth=2)
    int8 = quantize(fp32, tmp_path / "tiny.int8.onnx", photos(3))
    ops = [node.op_type for node in onnx.load(str(int8)).graph.node]
    assert ops.count("Conv") == 3 and "QuantizeLinear" in ops and "DequantizeLinear" in ops
    image = next(photos(1))
    reference = Ben2.load(fp32, threads=1).matte(image, mask_values="raw")
    candidate = Ben2.load(int8, threads=1, optimization="extended").matte(image, mask_values="raw")
    assert candidate.shape == reference.shape
    assert not np.array_equal(candidate, reference)  # it really ran in int8
    assert float(np.abs(candidate - reference).max()) < 0.05


def test_no_calibration_photos_is_refused(tmp_path):
    fp32 = build_ben2(tmp_path / "tiny.onnx", size=32)
    with pytest.raises(SystemExit, match="no calibration photos"):
        quantize(fp32, tmp_path / "tiny.int8.onnx", [])


def test_agreement_matches_a_count_by_hand():
    reference = np.array([[0.9, 0.8], [0.1, 0.6]], np.float32)
    candidate = np.array([[0.7, 0.2], [0.3, 0.6]], np.float32)
    result = agreement(reference, candidate)
    assert result.mae == pytest.approx((0.2 + 0.6 + 0.2 + 0.0) / 4, abs=1e-6)
    assert result.iou == pytest.approx(2 / 3)  # at 0.5: {00, 01, 11} vs {00, 11}
    assert agreement(np.zeros((2, 2)), np.zeros((2, 2))).iou == 1.0


def test_attention_matmuls_are_the_ones_beside_softmax(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    nodes = [helper.make_node("MatMul", ["x", "x"], ["proj"], name="projection"),
             helper.make_node("MatMul", ["proj", "x"], ["scores"], name="scores"),
             helper.make_node("Add", ["scores", "x"], ["biased"], name="bias"),
             helper.make_node("Softmax", ["biased"], ["weights"], name="softmax"),
             helper.make_node("MatMul", ["weights", "x"], ["y"], name="mix")]
    path = tmp_path / "attention.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y])), str(path))
    assert sorted(attention_matmuls(path)) == ["mix", "scores"]
