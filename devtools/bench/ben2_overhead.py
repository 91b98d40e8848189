"""Node overhead of Remove Background (BEN2) against a bare ``InferenceSession.run``.

Builds a BEN2-signature ONNX model heavy enough to take over a second per image, then times, in
alternation on the same model and the same 1024² image: the node (pre-processing, inference,
post-processing, tensor conversion) and the bare session run on an already prepared tensor.

    python -m devtools.bench.ben2_overhead [--runs 7] [--depth 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np


from devtools.bench.common import interleaved_medians


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--depth", type=int, default=32, help="3×3 convolutions at 1024² (cost per image)")
    args = parser.parse_args(argv)

    import torch

    from cutout_guard.ben2_nodes import RemoveBackground
    from cutout_guard.engines.ben2 import Ben2, preprocess
    from cutout_guard.comfyui.handle import ModelHandle
    from devtools.synthetic.ben2 import build_ben2

    with tempfile.TemporaryDirectory() as tmp:
        path = build_ben2(Path(tmp) / "heavy.onnx", depth=args.depth)
        model = Ben2.load(path)
        handle = ModelHandle("bench", lambda: model)
        rng = np.random.default_rng(0)
        rgb = rng.random((1024, 1024, 3), dtype=np.float32)
        image = torch.from_numpy(rgb)[None]
        tensor = preprocess(rgb)
        node = RemoveBackground()

        def run_node():
            node.run(handle, image, "transparent", "#FFFFFF", False, "normalized")

        def run_bare():
            model.session.run(None, {model.input_name: tensor})

        times = interleaved_medians({"node": run_node, "bare": run_bare}, runs=args.runs)
    node_median, bare_median = statistics.median(times["node"]), statistics.median(times["bare"])
    print(f"BEN2-signature model, depth {args.depth}, 1024x1024 input, {args.runs} runs each (alternating)")
    print(f"  bare InferenceSession.run : median {bare_median:.3f} s  {[round(t, 3) for t in times['bare']]}")
    print(f"  Remove Background node    : median {node_median:.3f} s  {[round(t, 3) for t in times['node']]}")
    print(f"  node / bare = {node_median / bare_median:.3f}  (overhead {100 * (node_median / bare_median - 1):+.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
