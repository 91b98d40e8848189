"""ONNX graphs with BEN2's signature: ``input`` float32 ``[1,3,S,S]`` → probability ``[1,1,S,S]``.

``build_ben2(path)`` writes a model whose output is ``sigmoid(w·rgb + b)`` per pixel (weights in
``WEIGHTS``/``BIAS``), so a test can compute the expected map with numpy. ``flat=True`` outputs a
constant 0.5 map; ``output_dtype="float16"`` casts the output as the published file does;
``depth`` adds that many 3×3 convolutions (16 channels, at full resolution) before the head to
make a model slow enough to benchmark, its output still in 0..1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS = (2.0, -1.5, 3.0)
BIAS = -1.0


def build_ben2(
    path: str | Path,
    *,
    size: int = 1024,
    output_dtype: str = "float32",
    flat: bool = False,
    depth: int = 0,
    input_name: str = "input",
    seed: int = 0,
) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current, channels = input_name, 3
    if depth:
        width = 16
        for layer in range(depth):
            w = (rng.standard_normal((width, channels, 3, 3)) / np.sqrt(channels * 9)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"conv{layer}_w"))
            inits.append(numpy_helper.from_array(np.zeros(width, np.float32), f"conv{layer}_b"))
            nodes.append(helper.make_node("Conv", [current, f"conv{layer}_w", f"conv{layer}_b"], [f"conv{layer}"], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"conv{layer}"], [f"relu{layer}"]))
            current, channels = f"relu{layer}", width
    head_w = np.zeros((1, channels, 1, 1), np.float32)
    if flat:
        head_b = np.zeros(1, np.float32)  # sigmoid(0) = 0.5 everywhere
    else:
        head_w[0, :3, 0, 0] = WEIGHTS if not depth else rng.standard_normal(3) * 0.1
        head_b = np.array([BIAS], np.float32)
    inits += [numpy_helper.from_array(head_w, "head_w"), numpy_helper.from_array(head_b, "head_b")]
    nodes.append(helper.make_node("Conv", [current, "head_w", "head_b"], ["logits"]))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["prob"]))
    out_type = TensorProto.FLOAT16 if output_dtype == "float16" else TensorProto.FLOAT
    if output_dtype == "float16":
        nodes.append(helper.make_node("Cast", ["prob"], ["output"], to=TensorProto.FLOAT16))
    else:
        nodes.append(helper.make_node("Identity", ["prob"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "ben2_signature",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", out_type, [1, 1, size, size])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def expected_probability(tensor: np.ndarray) -> np.ndarray:
    """What ``build_ben2`` (no depth, not flat) outputs for a ``[1,3,S,S]`` input, in numpy."""
    logits = np.tensordot(np.asarray(WEIGHTS, np.float64), tensor[0].astype(np.float64), axes=1) + BIAS
    return (1.0 / (1.0 + np.exp(-logits)))[None, None]
