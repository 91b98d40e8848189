"""Peak memory of ``cutout-guard run`` against image size, with tiny models (nothing downloaded).

    python -m devtools.bench.memory [--megapixels 1,12,48,64] [--actions keep,blur] [--out FILE.md]

Builds tiny models once (a BEN2 graph with the real 1024² input, the tiny Florence-2, a Llama
Guard GGUF that always answers), generates one PNG per size (a smooth pattern with noise, so the
file decodes like a photo), then runs the command line once per size and unsafe action in a fresh
process, with ``--threshold 0`` so every image is judged unsafe and the action really runs. The
peak resident memory of each run is the kernel's ``ru_maxrss`` of that child process; the models
and the interpreter are the same in every run, so what grows with the image is
``(peak - peak at the smallest size) / (pixels - smallest pixels)`` — bytes per extra input pixel;
the same difference of wall times gives seconds per extra megapixel (constant when time grows
linearly).

The big sizes need several GB: a run is skipped, and the table says so, when the machine's
available memory is below ``--need`` bytes per pixel (default 250, what the slowest version
measured here needed) times its pixels.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {1: (1000, 1000), 12: (4000, 3000), 48: (8000, 6000), 64: (8000, 8000)}


def build_models(root: Path) -> Path:
    from devtools.synthetic.ben2 import build_ben2
    from devtools.synthetic.florence2 import build_florence2
    from devtools.synthetic.image_guard import build_image_guard
    from devtools.synthetic.llama_guard import build_llama_guard

    if not (root / "done-v2").exists():
        build_ben2(root / "ben2" / "tiny.onnx", size=1024)
        build_florence2(root / "florence2" / "tiny")
        build_llama_guard(root / "LLM" / "tiny.gguf", weights="trigger")
        build_image_guard(root / "image_guard" / "tiny")  # the image check runs by default
        (root / "done-v2").write_text("")
    return root


def write_image(path: Path, width: int, height: int, *, band: int = 512, seed: int = 0) -> Path:
    """A ``width×height`` RGB PNG: gradients, rings and noise of ``seed`` (made in row bands, saved at level 1)."""
    from PIL import Image

    if path.exists():
        return path
    image = Image.new("RGB", (width, height))
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.float32)[None, :]
    for top in range(0, height, band):
        y = np.arange(top, min(top + band, height), dtype=np.float32)[:, None]
        r = np.hypot(x - width / 2, y - height / 2)
        rgb = np.stack(
            [x / width * 255 + 0 * y, y / height * 255 + 0 * x, (np.sin(r / 40.0) + 1) * 127.5],
            axis=-1,
        )
        rgb += rng.normal(0, 8, rgb.shape).astype(np.float32)
        block = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
        image.paste(block, (0, top))
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp, compress_level=1)
    os.replace(tmp, path)
    return path


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_cli(image: Path, models: Path, out: Path, action: str, extra: list[str]) -> tuple[int, float, int, str]:
    """(peak RSS bytes, seconds, exit status, last stderr line) of one ``cutout-guard run``."""
    command = [
        sys.executable, "-m", "cutout_guard", "run", str(image), "--out", str(out),
        "--models-dir", str(models), "--ben2", "tiny.onnx", "--florence2", "tiny", "--llama-guard", "tiny.gguf", "--image-guard", "tiny",
        "--offline", "--max-new-tokens", "4", "--num-beams", "1", "--threshold", "0",
        "--unsafe-action", action, "--threads", "2", *extra,
    ]
    peak, seconds, status, stderr = measured_run(command)
    lines = [line for line in stderr.splitlines() if line.strip()]
    return peak, seconds, status, lines[-1] if lines else ""


def measured_run(command: list[str]) -> tuple[int, float, int, str]:
    """Run ``cutout-guard run`` (``command``) in a child process: (its peak RSS in bytes, seconds,
    exit status, stderr)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    return run_peak(stderr, usage.ru_maxrss * 1024), time.perf_counter() - start, os.waitstatus_to_exitcode(status), stderr


WHOLE_RUN = re.compile(r"whole run (\d+) MiB")


def run_peak(stderr: str, ru_maxrss: int) -> int:
    """The run's peak in bytes: the one it logs ("whole run N MiB"), else ``ru_maxrss`` (a run that
    resets the kernel's peak per stage resets ``ru_maxrss`` too; one that logs nothing did not)."""
    found = WHOLE_RUN.search(stderr)
    return max(ru_maxrss, int(found.group(1)) * 2**20) if found else ru_maxrss


def cpu_name() -> str:
    from cutout_guard.core.cpu import cpu_model_name

    return cpu_model_name() or platform.processor() or "unknown CPU"


def table(rows: list[dict]) -> str:
    lines = [
        "| action | pixels | peak RSS (MiB) | extra B/pixel over the smallest | seconds | extra s per extra MP |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['action']} | {row['pixels']:,} | skipped: {row['skipped']} | | | |")
            continue
        per_pixel = "—" if row["per_pixel"] is None else f"{row['per_pixel']:.1f}"
        per_mp = "—" if row.get("per_mp") is None else f"{row['per_mp']:.2f}"
        lines.append(
            f"| {row['action']} | {row['pixels']:,} | {row['rss'] / 2**20:,.0f} | {per_pixel} | {row['seconds']:.1f} | {per_mp} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="1,12,48,64", help="image sizes from %s (default: %%(default)s)" % sorted(SIZES))
    parser.add_argument("--actions", default="keep,blur", help="unsafe actions to run (default: %(default)s)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "cutout-guard-bench-memory"), help="models and images are kept here")
    parser.add_argument("--need", type=float, default=250.0, help="skip a run unless this many bytes per pixel are available")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    parser.add_argument("cli_args", nargs="*", help="after --: more arguments for `cutout-guard run`")
    args = parser.parse_args(argv)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    models = build_models(cache / "models")
    sizes = [int(s) for s in args.megapixels.split(",")]
    rows: list[dict] = []
    for action in args.actions.split(","):
        base = None
        for mp in sizes:
            width, height = SIZES[mp]
            pixels = width * height
            image = write_image(cache / f"{mp}mp.png", width, height)
            row = {"action": action, "pixels": pixels}
            if available_bytes() < args.need * pixels:
                row["skipped"] = f"{available_bytes() / 2**30:.1f} GiB available, {args.need * pixels / 2**30:.1f} GiB wanted"
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
                continue
            out = cache / f"out-{action}-{mp}"
            for old in out.glob("*"):
                old.unlink()
            rss, seconds, status, last = run_cli(
                image, models, out, action, ["--max-pixels", str(max(pixels, 1)), *args.cli_args]
            )
            if status != 0:
                row["skipped"] = f"exit {status}: {last[:200]}"
            else:
                row.update(rss=rss, seconds=seconds)
                if base is None:
                    base = row
                    row["per_pixel"] = row["per_mp"] = None
                else:
                    row["per_pixel"] = (rss - base["rss"]) / (pixels - base["pixels"])
                    row["per_mp"] = (seconds - base["seconds"]) / ((pixels - base["pixels"]) / 1e6)
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    publish(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; Python {platform.python_version()}", table(rows), args.out)
    return 0


def publish(header: str, table_text: str, out: str | None) -> None:
    """Print the header and the Markdown table, and write both to ``out`` when given."""
    text = f"{header}\n\n{table_text}\n"
    print(text)
    if out:
        Path(out).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
