"""Peak memory of a real ComfyUI server running a CPU workflow, on large images with tiny models or
on models of the real shapes, optionally inside a memory limit as a worker's container has.

    COMFYUI_DIR=… COMFYUI_PYTHON=… python -m devtools.bench.comfyui_memory [--megapixels 1,48] [--workflow cutout_caption_safety]
    COMFYUI_DIR=… COMFYUI_PYTHON=… python -m devtools.bench.comfyui_memory --megapixels 1 --ben2 BEN2.onnx --guard 1b \
        [--keep-loaded false] [--prompts 2] [--memory-limit 4]

``--ben2 PATH`` switches to models of the real shapes with random weights (that BEN2 graph, and
the benchmark's Florence-2-base, ViT-B/16 image guard and Llama Guard GGUF of ``--guard``'s shape);
``--keep-loaded`` sets every loader's ``keep_loaded`` (the workflows ship ``true``).

For each size a fresh ComfyUI (``--cpu``, this checkout installed as a custom node, as the
real-ComfyUI tests start it) runs the workflow from ``workflows_cpu/`` on ``--prompts`` generated
PNGs in a row (a new photo each time, the loaders' outputs cached between prompts as on a serving
worker), with the tiny models and the text check's threshold at 0 (every image unsafe, so the
saved image is blurred as the workflow's Save Cutout Report does for unsafe images). Reported:
the server's peak resident memory (``VmHWM``), its largest anonymous and file-backed resident
memory (sampled; mapped model files and libraries are file-backed and can be dropped under a
limit, anonymous memory cannot), and its major page faults (pages read back from disk: a model
evicted under a limit shows here). ``--memory-limit GIB`` runs the server in a memory cgroup of
that size (Linux, root; the page cache is dropped first): the run finishes, or the kernel kills
the server and the benchmark says the workflow does not fit. ComfyUI's own ``LoadImage`` makes
the float32 IMAGE tensor (12 bytes per pixel) and its mask (4); what the pack's nodes add shows as
the rest of the growth over the smallest size, in bytes per extra pixel.
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

from comfyui_harness import ComfyUI  # noqa: E402

from cutout_guard.app.stages import peak_memory  # noqa: E402
from devtools.synthetic.tiny_set import FOLDERS, build_tiny_models, with_tiny_models  # noqa: E402

from .cgroup import MemoryLimit  # noqa: E402
from .common import ResidentSampler  # noqa: E402
from .memory import SIZES, cpu_name, publish, write_image  # noqa: E402


def peak_rss(pid: int) -> int:
    peak = peak_memory(pid)
    if peak is None:
        raise RuntimeError(f"no peak RSS (VmHWM) for process {pid}: this needs Linux's /proc")
    return peak


KINDS = {"CutoutGuardLoadBEN2": "ben2", "CutoutGuardLoadFlorence2": "florence2", "CutoutGuardLoadLlamaGuard": "llama_guard",
         "CutoutGuardLoadImageGuard": "image_guard"}


def shaped_models(cache: Path, ben2: str, guard: str) -> dict[str, Path]:
    """The real-shaped random-weight models by loader node (built once by the benchmark's builders)."""
    from .pipeline import build_models

    paths = build_models(cache, guard=guard, florence2="base", ben2=ben2)
    return {node: Path(paths[kind]) for node, kind in KINDS.items()}


def prompt_for(workflow: str, image_name: str, shaped: dict[str, Path] | None, keep_loaded: bool | None) -> dict:
    prompt = with_tiny_models(json.loads((REPO / "workflows_cpu" / f"{workflow}.api.json").read_text()), image_name)
    for node in prompt.values():
        if shaped and node["class_type"] in shaped:
            node["inputs"]["model"] = shaped[node["class_type"]].name
        if keep_loaded is not None and "keep_loaded" in node["inputs"]:
            node["inputs"]["keep_loaded"] = keep_loaded
        if shaped and node["class_type"] == "CutoutGuardCaption":
            node["inputs"]["max_new_tokens"] = 20  # a random Florence-2 writes noise up to the limit; a typical caption's length
        if node["class_type"] == "CutoutGuardSafetyCheck":
            node["inputs"]["threshold"] = 0.0  # every image unsafe, so the report's unsafe action (blur) really runs
    return prompt


def link_models(server: ComfyUI, tiny: Path, shaped: dict[str, Path] | None) -> None:
    for folder in tiny.iterdir():
        for item in folder.iterdir():
            (server.models_root / folder.name / item.name).symlink_to(item, target_is_directory=item.is_dir())
    for node, path in (shaped or {}).items():
        target = server.models_root / FOLDERS[node] / path.name
        if not target.exists():
            target.symlink_to(path, target_is_directory=path.is_dir())
        if path.suffix == ".onnx" and path.with_name(path.name + ".data").exists():  # external weights beside the graph
            target.with_name(path.name + ".data").symlink_to(path.with_name(path.name + ".data"))


def measure(comfy_dir: Path, python: str, images: list[Path], workflow: str, models: Path,
            shaped: dict[str, Path] | None = None, keep_loaded: bool | None = None, memory_limit: int | None = None) -> dict:
    """A fresh ComfyUI runs the workflow on each image in turn (the loaders' outputs stay cached
    between prompts, as in a serving worker): the server's peak RSS, its largest anonymous and
    file-backed resident memory (bytes), and the seconds of each prompt; with ``memory_limit`` the
    server runs in a memory cgroup of that size (``limited``: its peak charge; ``oom_kills``)."""
    with tempfile.TemporaryDirectory(prefix="cutout-guard-comfy-mem-") as base:
        limit = None if memory_limit is None else MemoryLimit(f"cutout-guard-bench-{os.getpid()}", memory_limit)
        if limit is not None:
            limit.drop_page_cache()
        try:
            return _serve(comfy_dir, python if limit is None else limit.launcher(python, Path(base)), Path(base),
                          images, workflow, models, shaped, keep_loaded, limit)
        except Exception:
            if limit is not None and limit.oom_kills():
                raise SystemExit(f"the server was killed by the {memory_limit / 2**30:.2f} GiB memory limit "
                                 f"({limit.oom_kills()} OOM kill(s)): the workflow does not fit") from None
            raise
        finally:
            if limit is not None:
                limit.remove()


def _serve(comfy_dir: Path, python: str, base: Path, images: list[Path], workflow: str, models: Path,
           shaped: dict[str, Path] | None, keep_loaded: bool | None, limit: MemoryLimit | None) -> dict:
    server = ComfyUI(comfy_dir, base, python=python)
    try:
        link_models(server, models, shaped)
        for image in images:
            (server.input_dir / image.name).symlink_to(image)  # over the upload size limit at 48 MP
        seconds = []
        with ResidentSampler(server.process.pid) as resident:
            for image in images:
                prompt = prompt_for(workflow, image.name, shaped, keep_loaded)
                start = time.perf_counter()
                server.run(prompt, timeout=1800)
                seconds.append(time.perf_counter() - start)
        got = {"peak": peak_rss(server.process.pid), "anon": resident.peaks["RssAnon"],
               "file": resident.peaks["RssFile"], "major_faults": resident.major_faults, "seconds": seconds}
        if limit is not None:
            got.update(limited=limit.peak(), oom_kills=limit.oom_kills())
        return got
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.comfyui_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="1,48", help="image sizes from %s (default: %%(default)s)" % sorted(SIZES))
    parser.add_argument("--workflow", default="cutout_caption_safety", help="a workflow of workflows_cpu/ (default: %(default)s)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "cutout-guard-bench-comfyui-memory"))
    parser.add_argument("--ben2", metavar="PATH", help="models of the real shapes: this BEN2 graph (its real architecture) and the benchmark's others")
    parser.add_argument("--guard", default="1b", help="with --ben2: Llama Guard shape 1b or 8b (default: %(default)s)")
    parser.add_argument("--keep-loaded", choices=("true", "false"), help="every loader's keep_loaded (default: as the workflow)")
    parser.add_argument("--bench-cache", default=os.environ.get("CUTOUT_GUARD_BENCH_CACHE", str(Path.home() / ".cache" / "cutout-guard-bench")),
                        help="where the real-shaped models are built")
    parser.add_argument("--memory-limit", type=float, metavar="GIB",
                        help="run the server in a memory cgroup of this many GiB, as a worker's container (Linux, root)")
    parser.add_argument("--prompts", type=int, default=1, help="prompts in a row on one server, each on a new photo (default: %(default)s)")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        parser.error("set COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (its Python)")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    cache = Path(args.cache)
    models = cache / "models"
    build_tiny_models(models)
    shaped = shaped_models(Path(args.bench_cache), args.ben2, args.guard) if args.ben2 else None
    keep_loaded = None if args.keep_loaded is None else args.keep_loaded == "true"
    lines = ["| pixels | server peak RSS (MiB) | largest anonymous / file-backed (MiB) | major page faults | extra B/pixel over the smallest | seconds per prompt |",
             "|---:|---:|---:|---:|---:|---:|"]
    base = None
    for mp in (int(s) for s in args.megapixels.split(",")):
        width, height = SIZES[mp]
        images = [write_image(cache / f"{mp}mp-{n}.png", width, height, seed=n) for n in range(args.prompts)]  # a new photo each prompt
        limit = None if args.memory_limit is None else int(args.memory_limit * 2**30)
        got = measure(Path(comfy_dir), python, images, args.workflow, models, shaped, keep_loaded, limit)
        if limit is not None:
            print(f"finished inside the {args.memory_limit} GiB limit, OOM kills {got['oom_kills']} (the cgroup's peak charge "
                  f"{got['limited'] / 2**20:,.0f} MiB counts page cache, which the kernel reclaims at the limit)", flush=True)
        rss, pixels = got["peak"], width * height
        per_pixel = "—" if base is None else f"{(rss - base[1]) / (pixels - base[0]):.1f}"
        base = base or (pixels, rss)
        seconds = " / ".join(f"{s:.1f}" for s in got["seconds"])
        lines.append(f"| {pixels:,} | {rss / 2**20:,.0f} | {got['anon'] / 2**20:,.0f} / {got['file'] / 2**20:,.0f} | {got['major_faults']:,} | {per_pixel} | {seconds} |")
        print(lines[-1], flush=True)
    what = f"real shapes (BEN2 {Path(args.ben2).name}, guard {args.guard})" if shaped else "tiny models"
    publish(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; workflow {args.workflow}, {what}, keep_loaded {args.keep_loaded or 'as shipped'}" + (f", in a {args.memory_limit} GiB memory cgroup" if args.memory_limit else ""), "\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
