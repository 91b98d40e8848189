"""The image check alone on the CPU: ViT-B/16 at 224² (Falconsai/nsfw_image_detection's architecture)
with random weights, or a real model folder.

Times ``ImageGuard.check`` on a 1024×768 photo-like image (pre-processing — the resize to 224² —
included), the median of ``--runs`` after ``--warmup``, and reports the load time, resident memory
before loading, after loading, and the process's peak (``ru_maxrss``) after the checks. Run it in a
process of its own so the peak is the image check's:

    python -m devtools.bench.image_guard [--runs 15] [--threads 0] [--model FOLDER] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from devtools.bench.common import median_seconds, peak_rss_mib


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _built(cache: Path) -> Path:
    """The random ViT-B/16 folder in ``cache``, built in a child process so its memory is not counted here."""
    target = cache / "image-guard-base"
    if not (target / "model.safetensors").is_file():
        code = f"from pathlib import Path; from devtools.bench.pipeline import _image_guard_model; _image_guard_model(Path({str(cache)!r}), 'base')"
        subprocess.run([sys.executable, "-c", code], check=True)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads, 0 = the CPUs this process may use")
    parser.add_argument("--model", help="an image guard folder instead of the random ViT-B/16")
    parser.add_argument("--cache", default=os.environ.get("CUTOUT_GUARD_BENCH_CACHE", str(Path.home() / ".cache" / "cutout-guard-bench")),
                        help="where the random ViT-B/16 is built once (default: %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from cutout_guard.core.cpu import resolve_threads
    from cutout_guard.engines.image_guard import ImageGuard
    from devtools.bench.pipeline import bench_image

    folder = Path(args.model) if args.model else _built(Path(args.cache))
    threads = resolve_threads(args.threads or None)
    torch.set_num_threads(threads)  # a benchmark process of its own: setting it here touches nothing else
    image = bench_image()
    before = _rss_mib()
    start = time.perf_counter()
    guard = ImageGuard.load(folder, precision="fp32", device="cpu")
    load_s = time.perf_counter() - start
    loaded = _rss_mib()
    median, runs = median_seconds(lambda: guard.check(image), runs=args.runs, warmup=args.warmup)
    parameters = sum(p.numel() for p in guard.model.parameters())
    guard.close()
    result = {
        "model": "random ViT-B/16 224²" if not args.model else str(args.model),
        "parameters": parameters,
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "load_s": round(load_s, 3),
        "check_median_s": round(median, 4),
        "check_runs_s": [round(t, 4) for t in runs],
        "rss_before_load_mib": round(before, 1),
        "rss_after_load_mib": round(loaded, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"image check ({result['model']}, {parameters / 1e6:.1f}M parameters, {threads} threads): "
            f"median {median * 1000:.0f} ms over {len(runs)} runs (min {min(runs) * 1000:.0f}, max {max(runs) * 1000:.0f}); "
            f"load {load_s:.2f} s; RSS {before:.0f} MiB before load, {loaded:.0f} after, peak {result['peak_rss_mib']:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
