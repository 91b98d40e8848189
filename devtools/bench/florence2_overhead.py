"""Florence-2: node overhead against a bare ``model.generate``, and where a caption's time goes.

Builds the real Florence-2-base architecture with random weights (no download), then in a fresh
process (so peak RSS is this model's):

1. times, in alternation on the same model and the same image, the Caption node (processor,
   vision tower, encoder, generation, post-processing, tensor conversion) and a bare
   ``model.generate(**inputs)`` on inputs the processor prepared beforehand;
2. splits one caption into its stages: pre-processing, vision encoder (DaViT + projection),
   text encoder (BART encoder over image + prompt tokens), decoding (``generate`` on the encoder
   output) and post-processing.

Random weights decide freely when to stop, so both paths generate a fixed number of new tokens
(``min_new_tokens = max_new_tokens = --tokens``).

    python -m devtools.bench.florence2_overhead [--runs 5] [--tokens 20] [--beams 3] [--device cpu] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from devtools.bench.common import peak_rss_mib


def interleaved(fns: dict, runs: int) -> dict:
    """Wall and process CPU seconds of each function, called in alternation after one warm-up each.

    CPU time (all threads of this process) is reported beside wall time because it is far less
    sensitive to other processes competing for the same cores.
    """
    for fn in fns.values():
        fn()
    times = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def measure(folder: str, runs: int, tokens: int, beams: int, device: str, precision: str, size: int) -> dict:
    import numpy as np
    import torch

    from cutout_guard.engines.florence2 import Florence2, to_pil
    from cutout_guard.comfyui.florence2_nodes import Caption
    from cutout_guard.comfyui.handle import ModelHandle

    rss_before = peak_rss_mib()
    start = time.perf_counter()
    engine = Florence2.load(folder, precision=precision, device=device)
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss_mib()
    engine.model.generation_config.min_new_tokens = tokens  # a fixed length for every path below
    cuda = engine.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    rgb = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
    image = torch.from_numpy(rgb)[None]
    handle = ModelHandle("bench", lambda: engine)
    node = Caption()
    inputs = engine.processor(text="<CAPTION>", images=to_pil(rgb), return_tensors="pt")
    inputs = {k: (v.to(engine.device, engine.dtype) if v.is_floating_point() else v.to(engine.device)) for k, v in inputs.items()}

    def run_node():
        captions = node.run(handle, image, "<CAPTION>", tokens, beams)["result"][0]
        assert len(captions) == 1

    def run_bare():
        with torch.inference_mode():
            ids = engine.model.generate(**inputs, max_new_tokens=tokens, num_beams=beams, do_sample=False)
        sync()
        assert ids.shape[1] == tokens + 1

    times = interleaved({"node": run_node, "bare": run_bare}, runs)

    stages = {"preprocess": [], "vision encoder": [], "text encoder": [], "decoding": [], "postprocess": []}
    for _ in range(runs):
        timings: dict = {}  # filled by the engine's forward hooks around generate's own stages
        engine.caption(rgb, task="<CAPTION>", max_new_tokens=tokens, num_beams=beams, timings=timings)
        for stage, seconds in timings.items():
            stages[stage.replace("_", " ")].append(seconds)
    return {
        "device": str(engine.device),
        "dtype": str(engine.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "params_m": sum(p.numel() for p in engine.model.parameters()) / 1e6,
        "load_s": load_s,
        "times": times,
        "stages": stages,
        "rss_before_mib": rss_before,
        "rss_after_load_mib": rss_loaded,
        "peak_rss_mib": peak_rss_mib(),
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption (fixed)")
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--size", type=int, default=1024, help="side of the square test image")
    parser.add_argument("--model", help="an existing Florence-2 folder instead of the random base-shape model")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = measure(args.model, args.runs, args.tokens, args.beams, args.device, args.precision, args.size)
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model
        if folder is None:
            folder = str(Path(tmp) / "florence2-base-shape")
            subprocess.run(
                [sys.executable, "-c", "import sys; from devtools.synthetic.florence2 import build_florence2; "
                 "build_florence2(sys.argv[1], shape='base')", folder],
                check=True, capture_output=True,
            )
        child = [sys.executable, "-m", "devtools.bench.florence2_overhead", "--child", "--model", folder, "--runs", str(args.runs), "--tokens",
                 str(args.tokens), "--beams", str(args.beams), "--device", args.device, "--precision", args.precision,
                 "--size", str(args.size)]
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])

    times, stages = result["times"], result["stages"]
    label = "random-weight Florence-2-base shape" if args.model is None else args.model
    print(f"{label} ({result['params_m']:.0f} M parameters) on {result['device']}, {result['dtype']}, "
          f"{result['threads']} threads; {args.size}x{args.size} image, <CAPTION>, {args.tokens} new tokens, "
          f"{args.beams} beams; {args.runs} runs each, median")
    print(f"  load: {result['load_s']:.2f} s")
    for clock in ("wall", "cpu"):
        node, bare = statistics.median(times["node"][clock]), statistics.median(times["bare"][clock])
        print(f"  {clock} time:")
        print(f"    bare model.generate (prepared inputs): {bare:.3f} s  {[round(t, 3) for t in times['bare'][clock]]}")
        print(f"    Caption node (image tensor -> text):   {node:.3f} s  {[round(t, 3) for t in times['node'][clock]]}")
        print(f"    node / bare = {node / bare:.3f}  (overhead {100 * (node / bare - 1):+.1f} %)")
    total = sum(statistics.median(v) for v in stages.values())
    print(f"  one caption by stage, wall time (sum of medians {total:.3f} s):")
    for name, values in stages.items():
        median = statistics.median(values)
        print(f"    {name:<15} {median:8.3f} s  {100 * median / total:5.1f} %")
    print(f"  peak RSS {result['peak_rss_mib']:.0f} MiB (after load {result['rss_after_load_mib']:.0f} MiB, "
          f"before load {result['rss_before_mib']:.0f} MiB)"
          + (f"; CUDA peak allocated {result['cuda_peak_mib']:.0f} MiB" if result["cuda_peak_mib"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
