"""Where BEN2's time goes on this CPU: onnxruntime's profiler, time by op type against FLOPs by op type.

A 1024² run profiled after a warm-up, under the optimisation level asked for. FLOPs are counted
per node from the shapes the profiler records (MatMul, Gemm, Conv and their fused forms), so no
static shape inference is needed.

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


def node_flops(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int:
    """FLOP of one node from its recorded shapes: 2 per multiply-add; 0 for ops that are not products."""
    if not outputs or not inputs:
        return 0
    out = int(np.prod(outputs[0], dtype=np.int64))
    if op in _MATMULS:
        a = inputs[0]
        k = a[-1] if op != "Gemm" or len(a) != 2 else a[1]
        return 2 * out * k
    weight = 3 if op == "QLinearConv" else 1  # QLinearConv: x, x_scale, x_zero_point, w, ...
    if op in _CONVS and len(inputs) > weight and len(inputs[weight]) >= 3:
        w = inputs[weight]  # [Cout, Cin/group, *kernel] (NchwcConv keeps the same order)
        return 2 * out * int(np.prod(w[1:], dtype=np.int64))
    return 0


def summarise(events: list[dict]) -> list[dict]:
    """Per op type: milliseconds, share of time, GFLOP, share of FLOPs, GFLOP/s; slowest first.
    Only the last run's nodes count (earlier runs are warm-ups)."""
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
        flops[op] += node_flops(op, _shapes(args.get("input_type_shape", [])), _shapes(args.get("output_type_shape", [])))
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


def profile(model: Path, *, threads: int | None, optimization: str, feed: dict | None = None) -> list[dict]:
    """The profiler's events of two runs of ``model`` on ``feed`` (default: one random 1024² image)."""
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
        return json.loads(Path(session.end_profiling()).read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a BEN2 graph (e.g. the benchmark's real architecture)")
    parser.add_argument("--optimization", default="basic", choices=["basic", "extended", "all"])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the pack's default)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = summarise(profile(args.model, threads=args.threads or None, optimization=args.optimization))
    log.info("BEN2 profile, optimisation %s, one 1024² image", args.optimization)
    for line in format_table(rows, args.top):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
