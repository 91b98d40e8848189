"""BEN2 alone against the machine's limit: seconds and peak memory of one 1024² image for each BEN2
graph measured (the real architecture, the FLOP-matched stand-in), their FLOP rate, and that rate
as a fraction of onnxruntime's own fp32 GEMM rate measured in the same run (``machine.gemm_rate``).
Each measurement runs in a fresh process of the benchmark (peak RSS is per process)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

FAITHFUL = 0.15  # a stand-in is faithful when its time and peak are within ±15 % of the real architecture's


def flops_of(path: str | Path) -> int | None:
    """FLOP of one run: the count written beside a built graph (``<graph>.flops``), else counted from
    the graph (MatMul, Gemm, Conv), else None when the graph's shapes cannot be inferred."""
    sidecar = Path(str(path) + ".flops")
    if sidecar.is_file():
        return int(json.loads(sidecar.read_text())["flops"])
    from devtools.synthetic.ben2_cost import count_flops

    try:
        return count_flops(path)
    except Exception:  # a graph whose shapes onnx cannot infer statically
        return None


def child_ben2(config: dict) -> dict:
    """Load BEN2 as the pack loads it and time ``runs`` mattes of the benchmark photo."""
    from cutout_guard.engines.ben2 import Ben2

    from .common import peak_rss_mib
    from .pipeline import bench_image

    model = Ben2.load(config["path"], threads=config.get("threads") or None)
    image = bench_image()
    for _ in range(config["warmup"]):
        model.matte(image)
    seconds = []
    for _ in range(config["runs"]):
        start = time.perf_counter()
        model.matte(image)
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "runs_s": seconds, "peak_mib": peak_rss_mib()}


def child_gemm(config: dict) -> dict:
    from .machine import gemm_rate

    return gemm_rate(config["threads"])


def measure(graphs: dict[str, str], *, threads: int, runs: int, warmup: int, run_child) -> dict:
    """``{"gemm": …, "gemm_runs": [before, after], "graphs": {label: {median_s, peak_mib, flops,
    gflops, of_gemm}}}`` in one run. The GEMM rate is measured before and after the BEN2 graphs
    (a CPU's rate drifts with its clock and its neighbours) and the share is taken of the higher."""
    before = run_child("gemm", {"threads": threads})
    found = {}
    for label, path in graphs.items():
        result = run_child("ben2", {"path": path, "threads": threads, "runs": runs, "warmup": warmup})
        flops = flops_of(path)
        result["flops"] = flops
        result["gflops"] = flops / result["median_s"] / 1e9 if flops else None
        found[label] = result
    after = run_child("gemm", {"threads": threads})
    gemm = max(before, after, key=lambda r: r["gflops"])
    for result in found.values():
        result["of_gemm"] = result["gflops"] / gemm["gflops"] if result["gflops"] else None
    return {"gemm": gemm, "gemm_runs": [before, after], "graphs": found}


def ratios(measured: dict, real: str, stand_in: str) -> dict | None:
    """The stand-in's time and peak over the real architecture's, when both were measured."""
    graphs = measured["graphs"]
    if real not in graphs or stand_in not in graphs:
        return None
    time_ratio = graphs[stand_in]["median_s"] / graphs[real]["median_s"]
    peak_ratio = graphs[stand_in]["peak_mib"] / graphs[real]["peak_mib"]
    faithful = all(abs(r - 1) <= FAITHFUL for r in (time_ratio, peak_ratio))
    return {"time": time_ratio, "peak": peak_ratio, "faithful": faithful}


def format_section(measured: dict, compared: dict | None) -> list[str]:
    gemm = measured["gemm"]
    drift = measured.get("gemm_runs")
    drift = f" (the higher of {drift[0]['gflops']:.1f} before and {drift[1]['gflops']:.1f} after BEN2)" if drift else ""
    lines = [f"BEN2 alone on the CPU ({gemm['threads']} threads, one 1024² image, median; one process each); "
             f"onnxruntime's fp32 GEMM ({gemm['n']}², same threads): {gemm['gflops']:.1f} GFLOP/s{drift}",
             "| BEN2 graph | s per image | peak RSS GiB | TFLOP per image | GFLOP/s | of the GEMM rate |",
             "|---|---|---|---|---|---|"]
    for label, r in measured["graphs"].items():
        flops = "unknown" if not r["flops"] else f"{r['flops'] / 1e12:.2f}"
        rate = "—" if r["gflops"] is None else f"{r['gflops']:.1f}"
        share = "—" if r["of_gemm"] is None else f"{r['of_gemm']:.0%}"
        lines.append(f"| {label} | {r['median_s']:.2f} | {r['peak_mib'] / 1024:.2f} | {flops} | {rate} | {share} |")
    if compared:
        verdict = "faithful" if compared["faithful"] else f"not faithful (outside ±{FAITHFUL:.0%})"
        lines.append(f"Stand-in / real architecture: time {compared['time']:.2f}×, peak {compared['peak']:.2f}× — {verdict}")
    return lines
