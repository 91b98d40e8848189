"""The GPU check: on a machine with an NVIDIA GPU, show that every engine really runs on it.

    devtools/gpu_check.sh [--only CHECK ...] [--budget 450] [--work DIR]

Checks, each in its own process (a crash or a hang fails its row, not the table), within one
time budget (default 450 s, under 8 minutes):

- ``onnxruntime_cuda``: BEN2 (a tiny graph) loads on provider CUDA and onnxruntime chose it
  (``session.get_providers()[0]``), a session that forbids falling back to the CPU builds, and its
  mask equals the CPU's;
- ``florence2_fp16``: Florence-2 of the real base shape with random weights runs in fp16 on CUDA
  and its greedy token ids equal fp32's on the same GPU (TF32 off) for the same images;
- ``llama_offload``: Llama Guard (a tiny GGUF) with ``n_gpu_layers=-1`` offloads every layer,
  read from llama.cpp's log ("offloaded N/N layers to GPU", N = the GGUF's block count + 1);
- ``comfyui``: ComfyUI (``COMFYUI_DIR``, run by ``COMFYUI_PYTHON``) started on the GPU (no
  ``--cpu``) runs every ``workflows_gpu/*.api.json`` on tiny models, and each report says CUDA,
  fp16 and ``n_gpu_layers`` -1 where the workflow has those stages;
- ``bench``: ``cutout-guard bench --preset cuda`` (one warm-up, one timed image) exits 0 with a
  CUDA result.

Every model is built here (devtools/synthetic); nothing is downloaded. Prints one table
(check | result | detail | seconds); exits 0 when every row passes, 1 when any fails, 2 on a
machine without an NVIDIA GPU (nothing is run there). Needs, in the Python that runs it, the pack
(``pip install -e .``) with a CUDA torch, ``onnxruntime-gpu`` and a CUDA build of llama-cpp-python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 450  # the whole check stays under 8 minutes
CHECKS = ("onnxruntime_cuda", "florence2_fp16", "llama_offload", "comfyui", "bench")
NO_GPU = ("gpu_check: this machine has no NVIDIA GPU (nvidia-smi lists none and the driver reports none) — "
          "run it on a machine with an NVIDIA GPU; nothing was checked")
MASK_TOLERANCE = 0.01  # CUDA may run the convolutions in TF32; a mask is stored in 8 bits (1/255 = 0.004)
OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


@dataclass(frozen=True)
class Row:
    check: str
    result: str  # "pass" or "fail"
    detail: str
    seconds: float


def render_table(rows: list[Row]) -> str:
    """The rows as one Markdown table: check | result | detail | seconds."""
    lines = ["| check | result | detail | seconds |", "|---|---|---|---|"]
    for row in rows:
        detail = " ".join(row.detail.split()).replace("|", "\\|")
        lines.append(f"| {row.check} | {row.result} | {detail} | {row.seconds:.1f} |")
    return "\n".join(lines)


def exit_code(rows: list[Row]) -> int:
    return 0 if rows and all(row.result == "pass" for row in rows) else 1


def nvidia_gpus(smi: str = "nvidia-smi", proc: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """The NVIDIA GPUs this machine has (``nvidia-smi -L`` lines, else the driver's entries); empty when none."""
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        gpus = [line.strip() for line in listed.stdout.splitlines() if line.startswith("GPU ")]
        if listed.returncode == 0 and gpus:
            return gpus
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return sorted(entry.name for entry in proc.iterdir())
    except OSError:
        return []


def offloaded_layers(lines: list[str]) -> tuple[int, int] | None:
    """``(offloaded, total)`` from llama.cpp's load log ("offloaded 17/17 layers to GPU"); None when absent."""
    for line in lines:
        match = OFFLOADED.search(line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


# ----------------------------------------------------------------------------- the checks (run in a child)


def _random_images(count: int, size: int = 256):
    import numpy as np

    return [np.random.default_rng(seed).random((size, size + 32 * seed, 3), dtype=np.float32) for seed in range(count)]


def check_onnxruntime_cuda(work: Path) -> list[Row]:
    import numpy as np

    from cutout_guard.engines.ben2 import Ben2
    from cutout_guard.engines.onnx_runtime import import_onnxruntime
    from devtools.synthetic.ben2 import build_ben2

    start = time.perf_counter()
    path = build_ben2(work / "tiny_ben2.onnx", size=64)
    ort = import_onnxruntime()
    gpu = Ben2.load(path, provider="CUDA")
    chosen = gpu.session.get_providers()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    strict = ort.InferenceSession(str(path), sess_options=options, providers=["CUDAExecutionProvider"])
    cpu = Ben2.load(path, provider="CPU")
    rgb = _random_images(1)[0]
    difference = float(np.abs(gpu.matte(rgb, mask_values="raw") - cpu.matte(rgb, mask_values="raw")).max())
    ok = chosen[0] == "CUDAExecutionProvider" and strict.get_providers()[0] == "CUDAExecutionProvider" and difference < MASK_TOLERANCE
    detail = (f"onnxruntime {ort.__version__}: session providers {chosen}; a session with CPU fallback disabled "
              f"builds; mask max |CUDA - CPU| {difference:.1e} (limit {MASK_TOLERANCE})")
    return [Row("onnxruntime_cuda", "pass" if ok else "fail", detail, time.perf_counter() - start)]


def florence2_base(work: Path) -> Path:
    """Florence-2 of the real base shape with random weights, built once under ``work``."""
    from devtools.synthetic.florence2 import build_florence2

    folder = work / "florence2-base"
    if not (folder / "model.safetensors").is_file():
        build_florence2(folder, shape="base")
    return folder


def check_florence2_fp16(work: Path) -> list[Row]:
    import torch

    from cutout_guard.engines.florence2 import Florence2
    from devtools.bench.florence2_precision import greedy_ids

    start = time.perf_counter()
    folder = florence2_base(work)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference in true fp32
    torch.backends.cudnn.allow_tf32 = False
    fp16 = Florence2.load(folder, precision="fp16", device="cuda")
    fp32 = Florence2.load(folder, precision="fp32", device="cuda")
    ran = (fp16.running_precision, {str(p.dtype) for p in fp16.model.parameters()}, fp16.device.type)
    pairs = [(greedy_ids(fp16, rgb, 20), greedy_ids(fp32, rgb, 20)) for rgb in _random_images(2)]
    equal = [a == b for a, b in pairs]
    ok = ran == ("fp16", {"torch.float16"}, "cuda") and all(equal)
    detail = (f"ran {ran[0]} on {ran[2]} ({torch.cuda.get_device_name(0)}); greedy ids fp16 == fp32 for "
              f"{sum(equal)}/{len(equal)} images" + ("" if all(equal) else f"; first difference: {pairs[equal.index(False)]}"))
    return [Row("florence2_fp16", "pass" if ok else "fail", detail, time.perf_counter() - start)]


def check_llama_offload(work: Path) -> list[Row]:
    from cutout_guard.engines.llama_guard import LlamaGuard
    from devtools.bench.common import llama_log
    from devtools.synthetic.llama_guard import build_llama_guard

    start = time.perf_counter()
    path = build_llama_guard(work / "tiny_guard.gguf", weights="trigger")
    with llama_log() as lines:
        guard = LlamaGuard.load(path, n_gpu_layers=-1)
    blocks = int(dict(guard.llm.metadata).get("llama.block_count", -1))
    verdict = guard.check("a red apple on a wooden table")
    guard.close()
    return [offload_row(lines, blocks, f"a check ran (safe={verdict.safe})", time.perf_counter() - start)]


def offload_row(lines: list[str], blocks: int, note: str, seconds: float) -> Row:
    """Passes when llama.cpp's log says every layer went to the GPU: the GGUF's ``blocks`` and the output layer."""
    counted = offloaded_layers(lines)
    ok = counted is not None and counted[0] == counted[1] == blocks + 1
    said = "offloaded %d/%d layers to GPU" % counted if counted else "no offload line"
    return Row("llama_offload", "pass" if ok else "fail", f"llama.cpp log: {said}; GGUF block_count {blocks} (+1 output layer); {note}", seconds)


GPU_SETTINGS = {"provider": "CUDA", "precision": "fp16", "n_gpu_layers": -1}


def workflow_rows(comfy, folder: Path, want: dict, photo: Path) -> list[Row]:
    """Run every ``folder/*.api.json`` on the tiny models in a started ComfyUI (``comfy``, the tests'
    harness); one row each: passes when the run saved a report whose devices are ``want``'s."""
    from comfyui_harness import build_tiny_models, with_tiny_models

    from cutout_guard.core import report

    build_tiny_models(comfy.models_root)
    image = comfy.upload_image(photo)
    rows = []
    for path in sorted(folder.glob("*.api.json")):
        began = time.perf_counter()
        name = f"comfyui {folder.name}/{path.name}"
        prompt = with_tiny_models(json.loads(path.read_text()), image)
        try:
            entry = comfy.run(prompt, timeout=120)
            save = next(k for k, v in prompt.items() if v["class_type"] == "CutoutGuardSaveReport")
            saved = entry["outputs"][save]["images"][0]
            data = report.read_png(comfy.view(saved["filename"], saved["subfolder"]))
        except (AssertionError, KeyError, IndexError, StopIteration, ValueError) as exc:
            rows.append(Row(name, "fail", f"{type(exc).__name__}: {str(exc)[:400]}", time.perf_counter() - began))
            continue
        rows.append(devices_row(name, data["devices"], want, time.perf_counter() - began))
    return rows


def devices_row(name: str, devices: dict, want: dict, seconds: float) -> Row:
    """Passes when every device setting the report gives (``null`` = that stage did not run) is ``want``'s."""
    got = {key: value for key, value in devices.items() if value is not None}
    wrong = {key: value for key, value in got.items() if want.get(key) != value}
    detail = f"report devices {got}" + (f"; not the settings wanted ({want}): {wrong}" if wrong else "")
    return Row(name, "pass" if got and not wrong else "fail", detail, seconds)


def check_comfyui(work: Path) -> list[Row]:
    start = time.perf_counter()
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        return [Row("comfyui", "fail", "COMFYUI_DIR is not set — point it at a ComfyUI checkout and COMFYUI_PYTHON at its "
                    "Python (with a CUDA torch, onnxruntime-gpu and a CUDA llama-cpp-python)", 0.0)]
    sys.path.insert(0, str(REPO / "tests"))
    from comfyui_harness import ComfyUI
    from photo import make_photo

    comfy = ComfyUI(Path(comfy_dir), work / "comfyui", python=os.environ.get("COMFYUI_PYTHON"), cpu=False)
    try:
        devices = [d.get("type") for d in comfy.get("/system_stats").get("devices", [])]
        rows = [Row("comfyui", "pass" if "cuda" in devices else "fail", f"ComfyUI started without --cpu; its devices {devices}",
                    time.perf_counter() - start)]
        return rows + workflow_rows(comfy, REPO / "workflows_gpu", GPU_SETTINGS, make_photo(work / "photo.jpg"))
    finally:
        comfy.close()


def check_bench(work: Path, timeout: float) -> list[Row]:
    start = time.perf_counter()
    command = [sys.executable, "-m", "cutout_guard", "bench", "--preset", "cuda", "--runs", "1", "--warmup", "1",
               "--florence2", str(florence2_base(work)), "--cache", str(work / "bench-cache"), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=max(1.0, timeout - 5), cwd=REPO)
    lines = done.stdout.splitlines()
    try:  # --json prints the document last, from a line "{" on
        cuda = json.loads("\n".join(lines[lines.index("{"):]))["results"]["cuda"]
        stages = {stage: round(values["median_s"], 2) for stage, values in cuda["stages"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        cuda, stages = None, None
    ok = done.returncode == 0 and cuda is not None
    detail = (f"`cutout-guard bench --preset cuda --runs 1`: seconds per stage {stages}" if ok
              else f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
    return [Row("bench", "pass" if ok else "fail", detail, time.perf_counter() - start)]


def run_child(name: str, work: Path, timeout: float) -> list[Row]:
    """One check in a fresh process; its rows, or one failing row saying why it gave none."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "devtools.gpu_check", "--child", name, "--work", str(work), "--budget", str(int(timeout))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return [Row(name, "fail", f"did not finish within its {timeout:.0f} s of the budget", time.perf_counter() - start)]
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            return [Row(**row) for row in json.loads(line)]
        except (ValueError, TypeError):
            continue
    why = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return [Row(name, "fail", f"exited {done.returncode}: {why[:400]}", time.perf_counter() - start)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=CHECKS, help="run only this check (repeatable)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all checks together (default: %(default)s)")
    parser.add_argument("--work", help="folder for the built models (default: a temporary folder)")
    parser.add_argument("--child", choices=CHECKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        work = Path(args.work)
        checks = {"onnxruntime_cuda": check_onnxruntime_cuda, "florence2_fp16": check_florence2_fp16,
                  "llama_offload": check_llama_offload, "comfyui": check_comfyui,
                  "bench": lambda folder: check_bench(folder, args.budget)}
        began = time.perf_counter()
        try:
            rows = checks[args.child](work)
        except Exception as exc:  # the row says what went wrong; the table goes on
            rows = [Row(args.child, "fail", f"{type(exc).__name__}: {str(exc).strip()[:400]}", time.perf_counter() - began)]
        print(json.dumps([asdict(row) for row in rows]))
        return 0

    gpus = nvidia_gpus()
    if not gpus:
        print(NO_GPU, file=sys.stderr)
        return 2
    print(f"GPU check on {', '.join(gpus)}; budget {args.budget:.0f} s", flush=True)
    deadline = time.monotonic() + args.budget
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.only or CHECKS:
            left = deadline - time.monotonic()
            if left < 5:
                rows.append(Row(name, "fail", "not run: the time budget was spent", 0.0))
                continue
            rows.extend(run_child(name, work, left))
    print(render_table(rows))
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())
