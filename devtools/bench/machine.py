"""What the benchmark says about the machine: the CPU, its vector features, and onnxruntime's own
fp32 GEMM rate on it (the ceiling a convolutional/attention network can approach)."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

from cutout_guard.core.cpu import CPUINFO, cpu_flags, cpu_model_name

FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description(cpuinfo: Path = CPUINFO) -> dict:
    """``{"model": …, "features": [...]}`` from ``/proc/cpuinfo`` (or the file given), read as the pack reads it."""
    flags = cpu_flags(cpuinfo)
    return {"model": cpu_model_name(cpuinfo) or platform.processor() or "unknown CPU", "features": [f for f in FEATURES if f in flags]}


def describe(cpu: dict) -> str:
    """``AMD EPYC — avx2, fma; no AVX-512, no AMX``: the benchmark's header line."""
    features = cpu["features"]
    missing = []
    if not any(f.startswith("avx512") for f in features):
        missing.append("no AVX-512")
    if not any(f.startswith("amx") for f in features):
        missing.append("no AMX")
    return f"{cpu['model']} — {', '.join(features) or 'no AVX2'}" + (f"; {', '.join(missing)}" if missing else "")


def matmul_model(n: int):
    """An ONNX graph multiplying two ``n×n`` float32 inputs (2·n³ FLOP per run)."""
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def gemm_rate(threads: int, *, n: int = 2048, runs: int = 20) -> dict:
    """onnxruntime's fp32 MatMul rate on ``threads`` threads: the median GFLOP/s of ``runs`` runs."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(matmul_model(n).SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.random((n, n), dtype=np.float32), "b": rng.random((n, n), dtype=np.float32)}
    session.run(None, feed)  # warm-up
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"n": n, "threads": threads, "median_s": median, "gflops": 2 * n**3 / median / 1e9}
