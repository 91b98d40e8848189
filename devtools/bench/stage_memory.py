"""Peak memory of ``cutout-guard run`` per stage, every model loaded (``--load all``) against one at a
time (``--load one``), on models of the real shapes with random weights.

    python -m devtools.bench.stage_memory --ben2 BEN2.onnx [--guard 1b|8b|PATH] [--images 2] [--runs 1]

``--ben2``: a BEN2 graph of the real architecture (the user's BEN2_Base.onnx, or the random-weight
one ``cutout-guard bench --ben2-code BEN2.py`` builds); the other models are built once by the
benchmark's builders (Florence-2-base, the image guard's ViT-B/16, a Llama Guard GGUF of the 1B or
8B shape, Q4_K_M). Each mode runs in a fresh process over the same generated photos; the process
peak is the kernel's ``ru_maxrss``, the stages' peaks are what the run logs ("peak memory by
stage"). Random weights change what is computed, not how much, except the caption's length: it is
capped by ``--caption-tokens`` (a random model may stop sooner).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .memory import cpu_name, measured_run, publish
from .pipeline import bench_image, build_models

STAGE_LINE = re.compile(r"peak memory by stage: (.*)")


def run_mode(load: str, images: Path, models: dict, out: Path, caption_tokens: int, threads: int) -> dict:
    command = [
        sys.executable, "-m", "cutout_guard", "run", str(images), "--out", str(out), "--load", load,
        "--ben2", models["ben2"], "--florence2", models["florence2"], "--llama-guard", models["llama_guard"],
        "--image-guard", models["image_guard"], "--offline", "--max-new-tokens", str(caption_tokens),
        "--threads", str(threads),
    ]
    peak, seconds, status, stderr = measured_run(command)
    if status != 0:
        raise SystemExit(f"--load {load} failed:\n{stderr[-3000:]}")
    found = STAGE_LINE.search(stderr)
    stages = {}
    if found:
        for part in found.group(1).split("; ")[0].split(", "):
            name, value, _ = part.split()
            stages[name] = float(value) / 1024
    return {"peak": peak / 2**30, "stages": stages, "seconds": seconds}


def table(results: dict[str, dict], count: int) -> str:
    names = ["load", "cutout", "image_check", "caption", "safety_check"]
    lines = ["| --load | process peak (GiB) | " + " | ".join(f"{n} (GiB)" for n in names) + f" | seconds for {count} images |",
             "|---|---:|" + "---:|" * len(names) + "---:|"]
    for load, result in results.items():
        cells = [f"{result['stages'][n]:.2f}" if n in result["stages"] else "—" for n in names]
        lines.append(f"| {load} | {result['peak']:.2f} | " + " | ".join(cells) + f" | {result['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.stage_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--ben2", required=True, metavar="PATH", help="a BEN2 graph of the real architecture")
    parser.add_argument("--guard", default="1b", help="Llama Guard shape (1b, 8b) or a .gguf path (default: %(default)s)")
    parser.add_argument("--images", type=int, default=2, help="photos in the batch (default: %(default)s)")
    parser.add_argument("--size", default="1024x768", help="their size WxH (default: %(default)s)")
    parser.add_argument("--caption-tokens", type=int, default=20, help="longest caption (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = all (default)")
    parser.add_argument("--cache", default=os.environ.get("CUTOUT_GUARD_BENCH_CACHE", str(Path.home() / ".cache" / "cutout-guard-bench")))
    parser.add_argument("--modes", default="all,one", help="the --load modes to run (default: %(default)s)")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)

    models = build_models(Path(args.cache), guard=args.guard, florence2="base", ben2=args.ben2)
    width, height = (int(v) for v in args.size.lower().split("x"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="cutout-guard-stage-memory-") as work:
        images = Path(work) / "in"
        images.mkdir()
        for index in range(args.images):
            rgb = bench_image(width, height, seed=index)
            Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(images / f"{index}.png")
        for load in args.modes.split(","):
            results[load] = run_mode(load, images, models, Path(work) / f"out-{load}", args.caption_tokens, args.threads)
            print(table({load: results[load]}, args.images).splitlines()[-1], flush=True)
    header = (f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; guard {args.guard}, BEN2 {Path(args.ben2).name}; "
              f"{args.images} photos of {width}×{height}")
    publish(header, table(results, args.images), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
