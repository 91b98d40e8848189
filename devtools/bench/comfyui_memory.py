"""Peak memory of a real ComfyUI server running a CPU workflow on a large image, with tiny models.

    COMFYUI_DIR=… COMFYUI_PYTHON=… python -m devtools.bench.comfyui_memory [--megapixels 1,48] [--workflow cutout_caption_safety]

For each size a fresh ComfyUI (``--cpu``, this checkout installed as a custom node, as the
real-ComfyUI tests start it) gets one generated PNG, runs the workflow from ``workflows_cpu/``
with the tiny models, and the server's peak resident memory (``VmHWM`` of its process) is read
once the prompt is done. ComfyUI's own ``LoadImage`` makes the float32 IMAGE tensor (12 bytes per
pixel) and its mask (4); what the pack's nodes add shows as the rest of the growth over the
smallest size, in bytes per extra pixel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the real-ComfyUI harness the tests use

from comfyui_harness import ComfyUI, build_tiny_models, with_tiny_models  # noqa: E402

from .memory import SIZES, cpu_name, publish, write_image  # noqa: E402


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def measure(comfy_dir: Path, python: str, image: Path, workflow: str, models: Path) -> tuple[int, float]:
    """(server peak RSS in bytes, seconds of the prompt) for one image in a fresh ComfyUI."""
    with tempfile.TemporaryDirectory(prefix="cutout-guard-comfy-mem-") as base:
        server = ComfyUI(comfy_dir, Path(base), python=python)
        try:
            for folder in models.iterdir():
                target = server.models_root / folder.name
                for item in folder.iterdir():
                    (target / item.name).symlink_to(item, target_is_directory=item.is_dir())
            name = server.upload_image(image)
            prompt = with_tiny_models(json.loads((REPO / "workflows_cpu" / f"{workflow}.api.json").read_text()), name)
            start = time.perf_counter()
            server.run(prompt, timeout=1800)
            return peak_rss(server.process.pid), time.perf_counter() - start
        finally:
            server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.comfyui_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="1,48", help="image sizes from %s (default: %%(default)s)" % sorted(SIZES))
    parser.add_argument("--workflow", default="cutout_caption_safety", help="a workflow of workflows_cpu/ (default: %(default)s)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "cutout-guard-bench-comfyui-memory"))
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        parser.error("set COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (its Python)")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    cache = Path(args.cache)
    models = cache / "models"
    build_tiny_models(models)
    lines = ["| pixels | server peak RSS (MiB) | extra B/pixel over the smallest | seconds |", "|---:|---:|---:|---:|"]
    base = None
    for mp in (int(s) for s in args.megapixels.split(",")):
        width, height = SIZES[mp]
        image = write_image(cache / f"{mp}mp.png", width, height)
        rss, seconds = measure(Path(comfy_dir), python, image, args.workflow, models)
        pixels = width * height
        per_pixel = "—" if base is None else f"{(rss - base[1]) / (pixels - base[0]):.1f}"
        base = base or (pixels, rss)
        lines.append(f"| {pixels:,} | {rss / 2**20:,.0f} | {per_pixel} | {seconds:.1f} |")
        print(lines[-1], flush=True)
    publish(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; workflow {args.workflow}", "\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
