"""Peak memory and time of one 1024² BEN2 inference under onnxruntime's session options.

Each configuration runs in a fresh process (peak RSS is per process): load, one warm-up run,
then ``--runs`` timed runs. Configurations: the memory arena, the memory pattern and the graph
optimisation level, alone and together.

    python -m devtools.bench.ben2_session_options [--model BEN2_Base.onnx] [--runs 5] [--depth 32] [--only 1 3 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "onnxruntime defaults (arena on, pattern on, opt all)": dict(mem_arena=True, mem_pattern=True, opt="all"),
    "arena off": dict(mem_arena=False, mem_pattern=True, opt="all"),
    "pattern off": dict(mem_arena=True, mem_pattern=False, opt="all"),
    "arena off, pattern off": dict(mem_arena=False, mem_pattern=False, opt="all"),
    "arena off, opt basic": dict(mem_arena=False, mem_pattern=True, opt="basic"),
    "arena off, pattern off, opt basic (the pack's CPU setting)": dict(mem_arena=False, mem_pattern=False, opt="basic"),
}

CHILD = r"""
import json, resource, statistics, sys, time
import numpy as np
import onnxruntime as ort
from cutout_guard.engines.onnx_runtime import session_options
cfg = json.loads(sys.argv[2])
opts = session_options(ort, None, mem_arena=cfg["mem_arena"], mem_pattern=cfg["mem_pattern"], optimization=cfg["opt"])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
s = ort.InferenceSession(sys.argv[1], sess_options=opts, providers=["CPUExecutionProvider"])
load = time.perf_counter() - t0
x = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
name = s.get_inputs()[0].name
s.run(None, {name: x})
times = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); s.run(None, {name: x}); times.append(time.perf_counter() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"median_s": statistics.median(times), "peak_mib": peak / 1024, "before_load_mib": base / 1024, "load_s": load}))
"""


def measure(model: Path, config: dict, runs: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), json.dumps(config), str(runs)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a real BEN2_Base.onnx; default: a generated model")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--only", type=int, nargs="+", metavar="N", help="measure only these configurations (1 = the defaults)")
    args = parser.parse_args(argv)
    chosen = {name: cfg for index, (name, cfg) in enumerate(CONFIGS.items(), 1) if not args.only or index in args.only or index == 1}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from devtools.synthetic.ben2 import build_ben2

            model = build_ben2(Path(tmp) / "heavy.onnx", depth=args.depth)
        rows = {name: measure(model, cfg, args.runs) for name, cfg in chosen.items()}
    base = rows[next(iter(CONFIGS))]
    print(f"model: {args.model or f'generated, depth {args.depth}'}; median of {args.runs} runs after a warm-up; one process each")
    print(f"{'configuration':<54} {'peak RSS MiB':>12} {'median s':>9} {'time vs default':>16}")
    for name, row in rows.items():
        print(f"{name:<54} {row['peak_mib']:>12.0f} {row['median_s']:>9.3f} {row['median_s'] / base['median_s']:>15.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
