"""onnxruntime session creation shared by ONNX engines: providers, threads, memory settings."""

from __future__ import annotations

import logging
from pathlib import Path

from ..core.cpu import resolve_threads
from ..core.errors import DeviceUnavailable, MissingDependency, ModelCorrupt

log = logging.getLogger(__name__)

PROVIDERS = {"CPU": "CPUExecutionProvider", "CUDA": "CUDAExecutionProvider"}

INSTALL_HINT = (
    "run `python install.py` in the Cutout Guard folder, or install exactly one of "
    "`pip install onnxruntime` (CPU) / `pip install onnxruntime-gpu` (CUDA)"
)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependency(f"onnxruntime is not installed — {INSTALL_HINT}") from None
    return onnxruntime


OPTIMIZATION_LEVELS = ("basic", "extended", "all")  # onnxruntime's graph optimisation levels


def session_options(ort, threads: int | None, *, mem_arena: bool, mem_pattern: bool, optimization: str = "all"):
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = resolve_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.enable_cpu_mem_arena = mem_arena
    options.enable_mem_pattern = mem_pattern
    options.log_severity_level = 3  # errors only; a CUDA fall-back is detected below, not logged
    return options


def _preload_cuda_libraries(ort) -> None:
    """Load the CUDA/cuDNN libraries pip installed (nvidia-* packages) before the session needs them.

    Without a prior ``import torch`` of a matching CUDA build, onnxruntime-gpu may not find them and
    silently falls back to the CPU. Missing libraries are reported by the fall-back check below.
    """
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # best effort: the provider check says what is wrong
        log.debug("onnxruntime.preload_dlls failed: %s", exc)


def create_session(
    path: Path,
    *,
    provider: str,
    label: str,
    threads: int | None = None,
    mem_arena: bool = False,
    mem_pattern: bool = False,
    optimization: str = "all",
):
    """An InferenceSession on ``provider`` (``CPU`` or ``CUDA``) or a clear error.

    Memory arena and memory pattern are off by default: on a graph of BEN2's cost
    (``python -m devtools.bench.ben2_session_options --model``) that gave the lowest peak RSS of the settings
    measured (1.5–1.76 GiB against 2.4 GiB with onnxruntime's defaults) at 2–4 % more time.

    ``CUDA`` fails loudly when the installed onnxruntime has no CUDA provider, and when the
    session silently fell back to CPU (missing CUDA/cuDNN libraries, no GPU).
    """
    ort = import_onnxruntime()
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    wanted = PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted not in available:
        raise DeviceUnavailable(
            f"{label}: provider CUDA was chosen but the installed onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}) — install onnxruntime-gpu in place of onnxruntime "
            "(`python install.py` does this on a machine with an NVIDIA GPU), or use the CPU workflow "
            "(provider CPU)"
        )
    if provider == "CUDA":
        _preload_cuda_libraries(ort)
    providers = [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]
    options = session_options(ort, threads, mem_arena=mem_arena, mem_pattern=mem_pattern, optimization=optimization)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ModelCorrupt(
            f"{label}: {path} could not be loaded as an ONNX model ({type(exc).__name__}: "
            f"{str(exc).strip()[:300]}) — the file is truncated or not an ONNX model: delete it and "
            "download it again"
        ) from None
    if session.get_providers()[0] != wanted:
        raise DeviceUnavailable(
            f"{label}: CUDA was chosen but onnxruntime fell back to the CPU (no usable GPU, or the "
            "CUDA 12 / cuDNN 9 libraries onnxruntime-gpu needs are missing) — fix the CUDA install, "
            "or use the CPU workflow (provider CPU)"
        )
    log.info("%s: %s on %s, %d threads", label, Path(path).name, provider, options.intra_op_num_threads)
    return session
