"""Florence-2 on the CPU: bf16 against fp32, in time and in greedy token ids, on random weights.

Builds Florence-2 with random weights (``--shape base``: the real Florence-2-base architecture;
``tiny``: the test model) and loads it twice through the engine, once in fp32 and once in bf16
with the bf16 path forced (:func:`forced_bf16_on_cpu`: the engine then runs bf16 whatever the
CPU's features). Then, on the same images:

1. greedy captions (``num_beams=1``): are the generated token ids of bf16 equal to fp32's?
2. time: ``--runs`` captions of a fixed length (``min_new_tokens = max_new_tokens = --tokens``)
   in alternation, fp32 and bf16; medians and their ratio.

The header names the CPU and whether it has AVX-512, AVX-512-BF16 and AMX: without a bf16 unit
torch emulates bf16 and it is far slower than fp32. Random weights show cost, and whether bf16
rounding changes greedy decisions on these models; they cannot show a real model's fidelity.

    python -m devtools.bench.florence2_precision [--shape base] [--runs 3] [--tokens 10] [--images 2] [--size 512]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock


@contextlib.contextmanager
def forced_bf16_on_cpu():
    """Inside the block, Florence-2 loaded with ``precision="bf16"`` on the CPU runs bf16, as on a
    CPU with AMX whose bf16 captions matched fp32's."""
    from cutout_guard.core import cpu
    from cutout_guard.engines import florence2

    with mock.patch.object(cpu, "cpu_flags", lambda *a: frozenset({"amx_bf16", "amx_tile", "avx512_bf16"})), \
            mock.patch.object(florence2, "BF16_MATCHES_FP32", True):
        yield


def greedy_ids(engine, rgb, tokens: int, *, fixed: bool = False) -> list[int]:
    """Greedy token ids of one caption (``fixed``: exactly ``tokens`` new tokens)."""
    inputs = engine.preprocess(rgb, "<CAPTION>")
    ids = engine.generate(inputs, max_new_tokens=tokens, num_beams=1, min_new_tokens=tokens if fixed else None)
    return ids[0].tolist()


def cpu_header() -> str:
    from cutout_guard.core import cpu

    flags = cpu.cpu_flags()
    model = cpu.cpu_model_name() or "unknown CPU"
    avx512 = "AVX-512 (avx512f)" if "avx512f" in flags else "no AVX-512"
    units = cpu.bf16_units(flags)
    return f"{model}: {avx512}, {'bf16 units: ' + ', '.join(units) if units else 'no AVX-512-BF16/AMX'}, avx2 {'yes' if 'avx2' in flags else 'no'}"


def measure(folder: Path, *, runs: int, tokens: int, images: int, size: int, threads: int | None) -> dict:
    import numpy as np
    import torch

    from cutout_guard.engines.florence2 import Florence2

    fp32 = Florence2.load(folder, precision="fp32", device="cpu", threads=threads)
    with forced_bf16_on_cpu():
        bf16 = Florence2.load(folder, precision="bf16", device="cpu", threads=threads)
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    pictures = [np.random.default_rng(seed).random((size, size, 3), dtype=np.float32) for seed in range(images)]
    same = []
    for rgb in pictures:
        a, b = greedy_ids(fp32, rgb, tokens), greedy_ids(bf16, rgb, tokens)
        same.append({"fp32": a, "bf16": b, "equal": a == b})
    engines = {"fp32": fp32, "bf16": bf16}
    for engine in engines.values():  # warm-up
        greedy_ids(engine, pictures[0], tokens, fixed=True)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            start = time.perf_counter()
            greedy_ids(engine, pictures[0], tokens, fixed=True)
            times[name].append(time.perf_counter() - start)
    result = {"threads": threads or torch.get_num_threads(), "ids": same, "times": times}
    fp32.close()
    bf16.close()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="base", choices=("base", "tiny"), help="random-weight model (default: %(default)s)")
    parser.add_argument("--model", help="an existing Florence-2 folder instead of a random-weight one")
    parser.add_argument("--runs", type=int, default=3, help="timed captions per precision (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=10, help="new tokens per caption (default: %(default)s)")
    parser.add_argument("--images", type=int, default=2, help="images compared for token ids (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="side of the square random test images (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's setting)")
    args = parser.parse_args(argv)

    from devtools.synthetic.florence2 import build_florence2

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else build_florence2(Path(tmp) / args.shape, shape=args.shape)
        result = measure(folder, runs=args.runs, tokens=args.tokens, images=args.images, size=args.size, threads=args.threads)
    label = args.model or f"random-weight Florence-2 ({args.shape} shape)"
    print(f"{cpu_header()}")
    print(f"{label}, {result['threads']} threads, {args.size}x{args.size} images, <CAPTION>, greedy")
    for index, pair in enumerate(result["ids"]):
        print(f"  image {index}: bf16 ids {'==' if pair['equal'] else '!='} fp32 ids  fp32 {pair['fp32']}  bf16 {pair['bf16']}")
    medians = {name: statistics.median(values) for name, values in result["times"].items()}
    print(f"  {args.tokens} new tokens, {args.runs} runs each in alternation, median wall time:")
    for name, values in result["times"].items():
        print(f"    {name}: {medians[name]:.2f} s  {[round(v, 2) for v in values]}")
    print(f"    bf16 / fp32 = {medians['bf16'] / medians['fp32']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
