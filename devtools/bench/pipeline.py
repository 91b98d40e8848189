"""``cutout-guard bench``: time and size the pipeline on models of the real shapes with random weights.

Builds, once, into ``--cache`` (nothing is downloaded): BEN2's real architecture with random weights
from a BEN2.py you fetched (``--ben2-code PATH``, :mod:`.ben2_architecture` — the faithful choice),
or the real BEN2 file given with ``--ben2 PATH``, or else the FLOP-matched stand-in (≈ 2.15 TFLOP
per 1024² image, :mod:`.synthetic.ben2_cost`; measured 1.8× faster and 2.4 GiB lighter than the
real architecture, so it flatters BEN2 — ``--compare-stand-in`` prints the ratios);
Florence-2-base from its published dimensions (:mod:`.synthetic.florence2`); a Llama Guard GGUF of
the Llama 3.2 1B shape (``--guard 1b``, default) or the Llama 3.1 8B shape (``--guard 8b``),
quantized to Q4_K_M by llama.cpp (:mod:`.synthetic.llama_guard`); the image guard as ViT-B/16 at 224²,
the architecture of Falconsai/nsfw_image_detection (:mod:`.synthetic.image_guard`; ``--image-guard
PATH`` for a real folder, ``--no-image-check`` to leave the stage out).

Each device runs in a fresh process (peak RSS is per process): cold load of each engine (seconds,
peak RSS while loading), a warm-up image, then ``--runs`` images through the three stages, timing
each stage and the whole image; the medians are reported. Peak RSS per stage is sampled every few
milliseconds while the stage runs (models of the other stages stay loaded, as in a real run); the
overall peak is the kernel's ``VmHWM``. Random weights change what is computed, not how much,
with two exceptions the numbers account for: the caption length is fixed (``--caption-tokens``,
a typical short caption), and the safety check reads a fixed typical caption instead of the random
model's text (its prompt length is then the real one); a random Llama answers neither "safe" nor
"unsafe", so the 1–2 answer tokens a real model decodes after the prompt are not in the time.

On the CPU it then times BEN2 alone on each graph and onnxruntime's own fp32 GEMM in the same
run, and prints BEN2's FLOP rate as a fraction of the GEMM rate; the header names the CPU and its
vector features.

Memory staging: models stay loaded; after each stage the pipeline hands freed heap back to the
system (``malloc_trim``; ``--no-trim`` to compare), so one stage's activations do not sit under
the next stage's peak. Llama Guard loads as the pipeline loads it (on the CPU without llama.cpp's repacked weight copy);
``--with-repack`` keeps that copy, llama.cpp's own default.

``--repack`` adds a measurement of llama.cpp's Q4_K weight repacking (its "extra buffer types":
faster matrix kernels for a second, repacked copy of the weights made at load) on and off: load
time, peak and resident memory, and the time of one check, each in its own process.

Prices are per second of machine time (``--price NAME=USD``; names starting with ``cpu`` apply to
the CPU time measured here, the others to the CUDA time); cost per image = price × total seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import ben2_rate
from .common import peak_rss_mib, resident
from .machine import cpu_description, describe as describe_cpu

log = logging.getLogger(__name__)

PRICES = {  # USD per second
    "cpu-2vcpu": 0.0000233,
    "cpu-4vcpu": 0.0000467,
    "cpu-8vcpu": 0.0000933,
    "rtx3070": 0.0003,
    "rtx4090": 0.0005,
}
CHECK_TEXT = "A red apple with a green leaf sitting on a wooden table in front of a grey wall."
STAGE_LABELS = {
    "cutout": "BEN2 background removal",
    "image_check": "Image guard (NSFW) check",
    "caption": "Florence-2 caption",
    "safety_check": "Llama safety check",
    "total": "Total per image",
}
LLAMA_3_1_8B = dict(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336)  # Llama Guard 3 8B's base


# ----------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_breakdown() -> dict[str, float]:
    """Resident memory now, in MiB: total, anonymous (heap, arenas, repacked weights), file-backed (mmapped models)."""
    fields = resident()
    return {short: fields.get(key, 0) / 2**20 for short, key in (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile"))}


class RssSampler:
    """Samples this process's RSS in a thread; ``window()`` gives the peak while its block ran (MiB)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    @contextlib.contextmanager
    def window(self):
        result = {}
        self.peak = rss_bytes()
        try:
            yield result
        finally:
            result["peak_mib"] = max(self.peak, rss_bytes()) / 2**20

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- models


def bench_image(width: int = 1024, height: int = 768, seed: int = 0) -> np.ndarray:
    """A smooth photo-like test image (a shaded disc on a gradient, with noise), ``H×W×3`` float 0..1."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([0.7 - 0.2 * y / height, 0.68 - 0.2 * y / height, 0.64 - 0.15 * y / height], -1)
    disc = ((x - width * 0.5) ** 2 + (y - height * 0.55) ** 2) < (min(width, height) * 0.28) ** 2
    shade = np.clip(1.2 - np.hypot(x - width * 0.45, y - height * 0.45) / (min(width, height) * 0.4), 0, 1)
    image[disc] = np.stack([0.3 + 0.6 * shade, 0.08 + 0.1 * shade, 0.06 + 0.05 * shade], -1)[disc]
    return np.clip(image + rng.standard_normal(image.shape).astype(np.float32) * 0.01, 0, 1)


def build_models(cache: Path, *, guard: str, florence2: str, ben2: str | None, image_guard: str | None = "base",
                 ben2_code: str | None = None) -> dict[str, str]:
    """Paths of the models, building the missing ones in ``cache`` (no image guard when ``image_guard`` is None).

    BEN2: the file ``ben2`` names, else the real architecture built from ``ben2_code`` (a BEN2.py),
    else the FLOP-matched stand-in.
    """
    cache.mkdir(parents=True, exist_ok=True)
    paths = {}
    if image_guard is not None:
        paths["image_guard"] = str(_image_guard_model(cache, image_guard))
    if ben2:
        paths["ben2"] = str(Path(ben2))
    elif ben2_code:
        paths["ben2"] = str(real_architecture(cache, ben2_code))
    else:
        paths["ben2"] = str(stand_in(cache))

    if Path(florence2).is_dir():
        paths["florence2"] = florence2
    else:
        target = cache / f"florence2-{florence2}"
        if not (target / "model.safetensors").is_file():
            from devtools.synthetic.florence2 import SHAPES, build_florence2

            if florence2 not in SHAPES:
                raise SystemExit(f"--florence2 {florence2}: the synthetic builder has shapes {', '.join(SHAPES)}; give one, or a model folder")
            log.warning("building Florence-2-%s with random weights in %s", florence2, target)
            build_florence2(target, shape=florence2)
        paths["florence2"] = str(target)

    if guard.endswith(".gguf"):
        paths["llama_guard"] = guard
    else:
        target = cache / f"llama-guard-{guard}-Q4_K_M.gguf"
        if not target.is_file():
            from devtools.synthetic import llama_guard as synthetic

            if guard == "8b" and "8b" not in synthetic.SHAPES:
                synthetic.SHAPES["8b"] = synthetic.Shape(**LLAMA_3_1_8B)
            need = {"1b": 2.5e9 + 1.3e9, "8b": 16.1e9 + 4.9e9}.get(guard, 0)  # F16 intermediate + Q4_K_M
            free = _free_bytes(cache)
            if need and free < need * 1.1:
                raise SystemExit(f"--guard {guard} needs about {need / 1e9:.0f} GB free in {cache} while building; {free / 1e9:.1f} GB are free")
            log.warning("building a Llama Guard GGUF of the %s shape (Q4_K_M) in %s — minutes", guard, target)
            synthetic.build_llama_guard(target, shape=guard, quantize="Q4_K_M")
        paths["llama_guard"] = str(target)
    return paths


def real_architecture(cache: Path, ben2_code: str) -> Path:
    """BEN2's real architecture with random weights, built once per BEN2.py into ``cache``."""
    from .ben2_architecture import build_ben2_architecture, cached_path

    target = cached_path(cache, Path(ben2_code))
    if not target.is_file():
        log.warning("building BEN2's real architecture from %s into %s — a minute or two", ben2_code, target)
    return build_ben2_architecture(ben2_code, target)


def stand_in(cache: Path) -> Path:
    """The FLOP-matched stand-in graph (used when no BEN2.py or BEN2 file is given)."""
    target = cache / "ben2-cost.onnx"
    if not target.is_file():
        from devtools.synthetic.ben2_cost import build_ben2_cost

        log.warning("building the BEN2-cost ONNX graph in %s", target)
        build_ben2_cost(target)
    return target


def _image_guard_model(cache: Path, image_guard: str) -> Path:
    """A given image guard folder, or the synthetic ViT of ``image_guard``'s shape built once in ``cache``."""
    if Path(image_guard).is_dir():
        return Path(image_guard)
    from devtools.synthetic.image_guard import SHAPES, build_image_guard

    if image_guard not in SHAPES:
        raise SystemExit(f"--image-guard {image_guard}: the synthetic builder has shapes {', '.join(SHAPES)}; give one, or a model folder")
    target = cache / f"image-guard-{image_guard}"
    if not (target / "model.safetensors").is_file():
        log.warning("building the image guard (ViT, %s shape) with random weights in %s", image_guard, target)
        build_image_guard(target, shape=image_guard)
    return target


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


# ----------------------------------------------------------------------------- child processes


def child_pipeline(config: dict) -> dict:
    """Load the engines on ``config['device']`` and time ``runs`` images (runs in a fresh process).

    The pipeline runs as the command line runs it; the ``around`` hook adds a peak-RSS window to
    each load and each stage.
    """
    from cutout_guard.app.pipeline import LOAD_ORDER, CaptionOptions, ModelPaths, Pipeline, devices_for

    sampler = RssSampler()
    devices = devices_for(config["device"])
    threads = config.get("threads") or None
    paths = ModelPaths(**{k: Path(v) for k, v in config["paths"].items()})
    peaks: dict[str, float] = {}
    after_load: dict[str, dict] = {}

    @contextlib.contextmanager
    def around(name: str):
        with sampler.window() as window:
            yield
        peaks[name] = window["peak_mib"]
        if name in LOAD_ORDER:
            after_load[name] = rss_breakdown()

    pipe = Pipeline.load(paths, devices=devices, threads=threads, repack=config.get("repack"),
                         order=tuple(config.get("load_order") or LOAD_ORDER), around=around)
    loads = {name: {"seconds": pipe.load_seconds[name], "peak_mib": peaks[name], "rss_after_mib": after_load[name]}
             for name in pipe.load_seconds}
    pipe.trim_memory = config.get("trim", True)
    tokens = config["caption_tokens"]
    caption_options = CaptionOptions(task="<CAPTION>", max_new_tokens=tokens, min_new_tokens=tokens, num_beams=config["num_beams"])
    image = bench_image()

    runs = []
    for index in range(config["warmup"] + config["runs"]):
        start = time.perf_counter()
        result = pipe.process(image, caption_options=caption_options, around=around, check_text=CHECK_TEXT)
        record: dict = {stage: (result.seconds[stage], peaks[stage]) for stage in result.seconds}
        record["total"] = (time.perf_counter() - start, max(v[1] for v in record.values()))
        record["prompt_tokens"] = result.verdict.prompt_tokens
        if index >= config["warmup"]:
            runs.append(record)
        print(f"  {config['device']} image {index + 1}/{config['warmup'] + config['runs']}: "
              + ", ".join(f"{k} {v[0]:.2f} s" for k, v in record.items() if isinstance(v, tuple)), file=sys.stderr, flush=True)
    pipe.close()
    sampler.close()
    stages = {}
    for stage in (s for s in STAGE_LABELS if runs and s in runs[0]):
        seconds = [r[stage][0] for r in runs]
        stages[stage] = {"median_s": statistics.median(seconds), "runs_s": seconds, "peak_mib": max(r[stage][1] for r in runs)}
    return {
        "device": config["device"],
        "devices": devices.as_report(),
        "threads": threads or _threads(),
        "load": loads,
        "cold_load_s": sum(v["seconds"] for v in loads.values()),
        "stages": stages,
        "prompt_tokens": runs[-1]["prompt_tokens"] if runs else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def child_repack(config: dict) -> dict:
    """Load one Llama Guard GGUF with repacking on or off; memory after load and the time of a check."""
    from cutout_guard.app.pipeline import _load_llama_guard, devices_for

    from devtools.bench.common import llama_log, repacked_mib

    before = rss_breakdown()
    start = time.perf_counter()
    with llama_log() as lines:
        guard = _load_llama_guard(Path(config["path"]), devices_for("cpu"), config.get("threads") or None, 2048, config["repack"])
    load_s = time.perf_counter() - start
    load_peak = peak_rss_mib()
    after = rss_breakdown()
    times = []
    for index in range(config["warmup"] + config["runs"]):
        start = time.perf_counter()
        guard.check(CHECK_TEXT)
        if index >= config["warmup"]:
            times.append(time.perf_counter() - start)
    guard.close()
    return {
        "repack": config["repack"],
        "repacked_mib": repacked_mib(lines),  # the repacked weight copy llama.cpp reported making
        "load_s": load_s,
        "load_peak_rss_mib": load_peak,
        "before_mib": before,
        "after_load_mib": after,
        "check_median_s": statistics.median(times),
        "check_runs_s": times,
        "peak_rss_mib": peak_rss_mib(),
    }


def child_repack_speed(config: dict) -> dict:
    """One process, two loads of the same GGUF (repacking on, off); checks alternate, so machine load hits both alike."""
    from cutout_guard.app.pipeline import _load_llama_guard, devices_for

    guards = {}
    for flag in (True, False):
        guards[flag] = _load_llama_guard(Path(config["path"]), devices_for("cpu"), config.get("threads") or None, 2048, flag)
    times: dict[bool, list[float]] = {True: [], False: []}
    for index in range(config["warmup"] + config["runs"]):
        for flag, guard in guards.items():
            start = time.perf_counter()
            guard.check(CHECK_TEXT)
            if index >= config["warmup"]:
                times[flag].append(time.perf_counter() - start)
    for guard in guards.values():
        guard.close()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    return {"on_median_s": on, "off_median_s": off, "off_over_on": off / on, "on_runs_s": times[True], "off_runs_s": times[False]}


def _threads() -> int:
    from cutout_guard.core.cpu import resolve_threads

    return resolve_threads(None)


MODULE = __spec__.name if __name__ == "__main__" and __spec__ is not None else __name__


def run_child(kind: str, config: dict) -> dict:
    command = [sys.executable, "-m", MODULE, "--child", kind, json.dumps(config)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark process for {kind} {config.get('device', '')} failed with status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- devices


def cuda_problem() -> str | None:
    """Why the CUDA column cannot be measured here, or None when all three runtimes can use a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return "torch sees no CUDA GPU"
    except ImportError:
        return "torch is not installed"
    try:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDA provider (install onnxruntime-gpu)"
    except ImportError:
        return "onnxruntime is not installed"
    try:
        import llama_cpp

        if not llama_cpp.llama_supports_gpu_offload():
            return "llama-cpp-python is a CPU-only build"
    except ImportError:
        return "llama-cpp-python is not installed"
    return None


# ----------------------------------------------------------------------------- report


def cost_rows(results: dict, prices: dict[str, float]) -> list[dict]:
    rows = []
    for name, price in prices.items():
        device = "cpu" if name.startswith("cpu") else "cuda"
        measured = results.get(device)
        total = measured["stages"]["total"]["median_s"] if measured else None
        rows.append({"price": name, "usd_per_s": price, "device": device, "usd_per_image": None if total is None else total * price,
                     "images_per_usd": None if not total else 1.0 / (total * price)})
    return rows


STAND_IN = "FLOP-matched stand-in"


def _ben2_label(args) -> str:
    if args.ben2:
        return f"your file {Path(args.ben2).name}"
    return "real architecture (random weights)" if args.ben2_code else STAND_IN


def format_table(doc: dict) -> str:
    results = doc["results"]
    columns = [d for d in ("cpu", "cuda") if d in results]
    header = ["Stage"] + [f"{d.upper()} ({_column_note(results[d])}) s" for d in columns]
    lines = []
    if doc.get("cpu"):
        lines += [f"CPU: {describe_cpu(doc['cpu'])}; BEN2: {doc['model_note']['ben2']}", ""]
    rows = [[label] + [f"{results[d]['stages'][stage]['median_s']:.2f}" if stage in results[d]["stages"] else "-" for d in columns]
            for stage, label in STAGE_LABELS.items()]
    rows.append(["Peak RSS, GiB"] + [f"{results[d]['peak_rss_mib'] / 1024:.2f}" for d in columns])
    rows.append(["Cold load, s"] + [f"{results[d]['cold_load_s']:.1f}" for d in columns])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    lines.append(line(header))
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [line(r) for r in rows]
    for device, why in doc.get("skipped", {}).items():
        lines.append(f"{device.upper()}: not measured — {why}")
    lines.append("")
    lines.append("Peak RSS per stage (MiB, models of the other stages loaded): " + "; ".join(
        f"{d.upper()} " + ", ".join(f"{s} {v['peak_mib']:.0f}" for s, v in results[d]["stages"].items() if s != "total")
        for d in columns))
    lines.append("Cold load (s / peak MiB while loading): " + "; ".join(
        f"{d.upper()} " + ", ".join(f"{k} {v['seconds']:.1f}/{v['peak_mib']:.0f}" for k, v in results[d]["load"].items()) for d in columns))
    lines.append("")
    lines.append("| Price | $/s | $ per image | images per $ |")
    lines.append("|---|---|---|---|")
    for row in doc["costs"]:
        per_image = "not measured" if row["usd_per_image"] is None else f"{row['usd_per_image']:.6f}"
        per_usd = "" if row["images_per_usd"] is None else f"{row['images_per_usd']:.0f}"
        lines.append(f"| {row['price']} ({row['device']}) | {row['usd_per_s']:.7f} | {per_image} | {per_usd} |")
    lines.append(f"(cost = price × the {', '.join(d.upper() for d in columns)} total measured here; other machines take other times)")
    if doc.get("ben2_rate"):
        lines.append("")
        lines += ben2_rate.format_section(doc["ben2_rate"], doc.get("ben2_compared"))
    if doc.get("repack"):
        lines.append("")
        lines.append("llama.cpp Q4_K repacking (Llama Guard alone, one process each):")
        lines.append("| repack | repacked copy GiB (llama.cpp's log) | load s | peak RSS at load GiB | RSS after load GiB (anon + file) | check median s |")
        lines.append("|---|---|---|---|---|---|")
        for r in doc["repack"]:
            after = r["after_load_mib"]
            lines.append(
                f"| {'on' if r['repack'] else 'off'} | {r['repacked_mib'] / 1024:.2f} | {r['load_s']:.1f} | {r['load_peak_rss_mib'] / 1024:.2f} | "
                f"{after['rss'] / 1024:.2f} ({after['anon'] / 1024:.2f} + {after['file'] / 1024:.2f}) | {r['check_median_s']:.2f} |"
            )
    if doc.get("repack_speed"):
        speed = doc["repack_speed"]
        lines.append(
            f"Same process, checks alternating: repack on {speed['on_median_s']:.2f} s, off {speed['off_median_s']:.2f} s "
            f"(off/on {speed['off_over_on']:.2f}, median of {len(speed['on_runs_s'])})"
        )
    return "\n".join(lines)


def _column_note(result: dict) -> str:
    if result["device"] == "cpu":
        return f"{result['threads']} threads"
    return "GPU"


# ----------------------------------------------------------------------------- main


def parse_prices(items: list[str]) -> dict[str, float]:
    prices = dict(PRICES)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--price {item!r}: expected NAME=USD_PER_SECOND, e.g. cpu-2vcpu=0.0000233")
        prices[name] = float(value)
    return prices


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutout-guard bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default="1b", help="Llama Guard shape: 1b (Llama 3.2 1B) or 8b (Llama 3.1 8B), or a .gguf path (default: %(default)s)")
    parser.add_argument("--florence2", default="base", help="Florence-2 synthetic shape (base) or a model folder (default: %(default)s)")
    parser.add_argument("--ben2", metavar="PATH", help="a real BEN2_Base.onnx instead of the BEN2-cost graph")
    parser.add_argument("--ben2-code", metavar="BEN2.py", help="BEN2.py of PramaLLC/BEN2 (fetched by you): benchmark BEN2's real "
                        "architecture with random weights, built from it once (the faithful choice)")
    parser.add_argument("--compare-stand-in", action="store_true", help="with --ben2-code or --ben2: also time BEN2 alone on the "
                        "FLOP-matched stand-in and print its time and peak as ratios of the real architecture's")
    parser.add_argument("--image-guard", default="base", help="image guard: synthetic shape (base = ViT-B/16 224²) or a model folder (default: %(default)s)")
    parser.add_argument("--no-image-check", action="store_true", help="leave the image check out, as `cutout-guard run --no-image-check`")
    parser.add_argument("--preset", "--device", dest="preset", choices=("cpu", "cuda", "all"), default="all",
                        help="cpu, cuda, or all (cuda when usable) (default: %(default)s; --device is its old name)")
    parser.add_argument("--runs", type=int, default=5, help="timed images per device, after the warm-up (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed images first (default: %(default)s)")
    parser.add_argument("--caption-tokens", type=int, default=20, help="caption length in tokens, fixed (default: %(default)s)")
    parser.add_argument("--num-beams", type=int, default=3, help="Florence-2 beams, as the Caption node's default (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = the CPUs this process may use")
    parser.add_argument("--with-repack", action="store_true", help="load Llama Guard with llama.cpp's weight repacking on (off by default on the CPU)")
    parser.add_argument("--repack", action="store_true", help="also measure llama.cpp's Q4_K repacking on and off")
    parser.add_argument("--no-trim", action="store_true", help="keep freed heap memory between stages (no malloc_trim)")
    parser.add_argument("--price", action="append", default=[], metavar="NAME=USD", help="price per second; cpu* names use the CPU time (repeatable)")
    parser.add_argument("--cache", default=os.environ.get("CUTOUT_GUARD_BENCH_CACHE", str(Path.home() / ".cache" / "cutout-guard-bench")), help="where built models are kept (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    prices = parse_prices(args.price)
    paths = build_models(Path(args.cache), guard=args.guard, florence2=args.florence2, ben2=args.ben2,
                         image_guard=None if args.no_image_check else args.image_guard, ben2_code=args.ben2_code)

    devices = ["cpu", "cuda"] if args.preset == "all" else [args.preset]
    skipped = {}
    problem = cuda_problem() if "cuda" in devices else None
    if problem:
        skipped["cuda"] = problem
        devices.remove("cuda")
        if args.preset == "cuda":
            print(f"CUDA cannot be measured here: {problem}", file=sys.stderr)
            return 2
    results = {}
    for device in devices:
        config = {
            "device": device, "paths": paths, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
            "caption_tokens": args.caption_tokens, "num_beams": args.num_beams, "repack": True if args.with_repack else None,
            "trim": not args.no_trim,
        }
        results[device] = run_child("pipeline", config)
    doc = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": _threads(), "python": platform.python_version()},
        "models": paths,
        "cpu": cpu_description(),
        "model_note": {"guard": args.guard, "florence2": args.florence2, "ben2": _ben2_label(args),
                       "image_guard": None if args.no_image_check else args.image_guard},
        "settings": {"runs": args.runs, "warmup": args.warmup, "caption_tokens": args.caption_tokens, "num_beams": args.num_beams,
                     "repack": bool(args.with_repack), "trim": not args.no_trim, "check_text": CHECK_TEXT},
        "results": results,
        "skipped": skipped,
        "costs": [],
    }
    doc["costs"] = cost_rows(results, prices)
    if "cpu" in results:
        graphs = {_ben2_label(args): paths["ben2"]}
        if args.compare_stand_in and (args.ben2 or args.ben2_code):
            graphs[STAND_IN] = str(stand_in(Path(args.cache)))
        doc["ben2_rate"] = ben2_rate.measure(graphs, threads=args.threads or _threads(), runs=args.runs, warmup=args.warmup,
                                             run_child=run_child)
        doc["ben2_compared"] = ben2_rate.ratios(doc["ben2_rate"], _ben2_label(args), STAND_IN)
    if args.repack:
        doc["repack"] = [
            run_child("repack", {"path": paths["llama_guard"], "repack": flag, "runs": args.runs, "warmup": args.warmup, "threads": args.threads})
            for flag in (True, False)
        ]
        doc["repack_speed"] = run_child("repack_speed", {"path": paths["llama_guard"], "runs": max(args.runs, 5), "warmup": args.warmup, "threads": args.threads})
    print(json.dumps(doc, indent=2) if args.json else format_table(doc))
    return 0


def _child_main(kind: str, config_json: str) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = json.loads(config_json)
    result = {"pipeline": child_pipeline, "repack": child_repack, "repack_speed": child_repack_speed,
              "ben2": ben2_rate.child_ben2, "gemm": ben2_rate.child_gemm}[kind](config)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
