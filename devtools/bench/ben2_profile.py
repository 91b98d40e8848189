"""Where BEN2's time goes on this CPU: onnxruntime's profiler, time by op type against FLOPs by op type.

A 1024² run profiled after a warm-up, under the optimisation level asked for. FLOPs are counted
per node from the shapes the profiler records (MatMul, Gemm, Conv and their fused forms), so no
static shape inference is needed — except a convolution's weight, which the profiler leaves out
when onnxruntime has pre-packed it (int8 ``QLinearConv``): those shapes come from one more,
untimed run with pre-packing off, matched by node index (the same graph, optimised alike).

    python -m devtools.bench.ben2_profile --model BEN2_Base.onnx [--optimization all] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_MATMULS = {"MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "FusedGemm"}
_CONVS = {"Conv", "FusedConv", "ConvInteger", "QLinearConv", "NchwcConv"}


def _shapes(entries: list[dict]) -> list[list[int]]:
    return [next(iter(entry.values())) for entry in entries]


def node_flops(op: str, inputs: list[list[int]], outputs: list[list[int]], weight: list[int] | None = None) -> int:
    """FLOP of one node from its recorded shapes: 2 per multiply-add; 0 for ops that are not products.
    ``weight``: a convolution's weight shape when the recorded inputs lack it."""
    if not outputs or not inputs:
        return 0
    out = int(np.prod(outputs[0], dtype=np.int64))
    if op in _MATMULS:
        a = inputs[0]
        k = a[-1] if op != "Gemm" or len(a) != 2 else a[1]
        return 2 * out * k
    if op in _CONVS:
        w = weight or (inputs[1] if op != "QLinearConv" and len(inputs) > 1 else None)
        if w is not None and len(w) >= 3:  # [Cout, Cin/group, *kernel] (NchwcConv keeps the same order)
            return 2 * out * int(np.prod(w[1:], dtype=np.int64))
    return 0


def missing_weights(events: list[dict]) -> bool:
    """Whether some convolution's recorded inputs lack its weight (onnxruntime pre-packed it)."""
    return any(e.get("args", {}).get("op_name") == "QLinearConv"
               and len(e["args"].get("input_type_shape", [])) < 9 for e in events if e.get("cat") == "Node")


def conv_weights(events: list[dict]) -> dict[str, list[int]]:
    """Each int8 convolution's weight shape by node index, from the events of a run with
    pre-packing off (where the weight, its fourth input, is recorded)."""
    weights = {}
    for event in events:
        args = event.get("args", {})
        shapes = _shapes(args.get("input_type_shape", []))
        if event.get("cat") == "Node" and args.get("op_name") == "QLinearConv" and len(shapes) > 3:
            weights[args["node_index"]] = shapes[3]  # x, x_scale, x_zero_point, w, ...
    return weights


def summarise(events: list[dict], weights: dict[str, list[int]] | None = None) -> list[dict]:
    """Per op type: milliseconds, share of time, GFLOP, share of FLOPs, GFLOP/s; slowest first.
    Only the last run's nodes count (earlier runs are warm-ups). ``weights``: convolutions' weight
    shapes by node index (:func:`conv_weights`), for those whose recorded inputs lack them."""
    weights = weights or {}
    runs = [e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last = max(runs, default=0)
    ms: dict[str, float] = defaultdict(float)
    flops: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < last:
            continue
        args = event.get("args", {})
        op = args.get("op_name", "?")
        ms[op] += event["dur"] / 1000
        node = args.get("node_index")
        flops[op] += node_flops(op, _shapes(args.get("input_type_shape", [])), _shapes(args.get("output_type_shape", [])),
                                weights.get(node))
    total_ms = sum(ms.values()) or 1.0
    total_flops = sum(flops.values()) or 1
    rows = [{"op": op, "ms": ms[op], "time_share": ms[op] / total_ms, "gflop": flops[op] / 1e9,
             "flop_share": flops[op] / total_flops, "gflops": flops[op] / 1e6 / ms[op] if ms[op] else 0.0}
            for op in ms]
    return sorted(rows, key=lambda r: r["ms"], reverse=True)


def format_table(rows: list[dict], top: int = 15) -> list[str]:
    lines = ["| op type | ms | share of time | GFLOP | share of FLOPs | GFLOP/s |", "|---|---|---|---|---|---|"]
    for r in rows[:top]:
        lines.append(f"| {r['op']} | {r['ms']:.0f} | {r['time_share']:.1%} | {r['gflop']:.1f} | "
                     f"{r['flop_share']:.1%} | {r['gflops']:.1f} |")
    rest = rows[top:]
    if rest:
        lines.append(f"| {len(rest)} other op types | {sum(r['ms'] for r in rest):.0f} | "
                     f"{sum(r['time_share'] for r in rest):.1%} | {sum(r['gflop'] for r in rest):.1f} | "
                     f"{sum(r['flop_share'] for r in rest):.1%} | |")
    return lines


def profile(model: Path, *, threads: int | None, optimization: str,
            feed: dict | None = None) -> tuple[list[dict], dict[str, list[int]]]:
    """The profiler's events of two runs of ``model`` on ``feed`` (default: one random 1024² image),
    and the pre-packed convolutions' weight shapes (:func:`conv_weights`; empty when none)."""
    import onnxruntime as ort

    from cutout_guard.engines.onnx_runtime import session_options

    options = session_options(ort, threads, mem_arena=False, mem_pattern=False, optimization=optimization)
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ben2")
        session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        if feed is None:
            image = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
            feed = {session.get_inputs()[0].name: image}
        session.run(None, feed)  # warm-up: summarise keeps only the last run
        session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        if not missing_weights(events):
            return events, {}
        options.profile_file_prefix = str(Path(tmp) / "shapes")
        options.add_session_config_entry("session.disable_prepacking", "1")
        session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        session.run(None, feed)
        return events, conv_weights(json.loads(Path(session.end_profiling()).read_text()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a BEN2 graph (e.g. the benchmark's real architecture)")
    parser.add_argument("--optimization", default="basic", choices=["basic", "extended", "all"])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the pack's default)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = summarise(*profile(args.model, threads=args.threads or None, optimization=args.optimization))
    log.info("BEN2 profile, optimisation %s, one 1024² image", args.optimization)
    for line in format_table(rows, args.top):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
