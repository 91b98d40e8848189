"""Device and precision for the engines that run on torch (Florence-2, the image guard).

``device`` is a torch device string (``cpu``, ``cuda``, ``cuda:1``); ``precision`` is ``fp32``,
``fp16`` or ``bf16``. On a CPU device the precision that runs is chosen by :func:`cpu_precision`
and logged once per load, saying which ran and why: fp16 runs as fp32 (several CPU kernels have
no half version, e.g. "LayerNormKernelImpl not implemented for 'Half'"); bf16 runs as bf16 only
on a CPU with a bf16 matrix unit (AVX-512-BF16 or AMX, read from ``/proc/cpuinfo``) and for a
model whose bf16 captions were shown to match fp32's, else as fp32 (without those units bf16 is
emulated: 10x slower than fp32 for Florence-2-base on an AVX2 CPU). torch is passed in by the
caller, which imported it when its model loaded.
"""

from __future__ import annotations

import contextlib
import logging

from ..core import cpu
from ..core.errors import BadInput, DeviceUnavailable
from ..core.vocab import PRECISIONS

log = logging.getLogger(__name__)


def resolve_device(torch, device, model: str) -> "torch.device":
    """``device`` as a torch.device; a clear error naming ``model`` when CUDA is asked for and not usable."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"{model}: device cuda was chosen but this torch has no usable CUDA GPU — pick device cpu "
            "(and precision fp32), or install a CUDA build of torch"
        )
    return device


def cpu_precision(precision: str, flags, *, bf16_matches_fp32: bool) -> tuple[str, str | None]:
    """The precision that runs on a CPU when ``precision`` is asked for, and the log line saying why.

    ``flags``: the CPU's feature flags (:func:`cpu.cpu_flags`); ``bf16_matches_fp32``: whether
    this model's bf16 results were shown to equal fp32's. The line is None when what runs is what
    was asked.
    """
    if precision == "fp32":
        return "fp32", None
    if precision == "fp16":
        return "fp32", "fp16 requested; the CPU has no fp16 kernels for it (e.g. LayerNorm), running fp32"
    units = cpu.bf16_units(flags)
    if not units:
        return "fp32", "bf16 requested; this CPU has no AVX-512-BF16/AMX, running fp32"
    if not bf16_matches_fp32:
        return "fp32", f"bf16 requested; this CPU has {'/'.join(units)}, but bf16 is not shown to match fp32 here, running fp32"
    return "bf16", f"bf16 requested; this CPU has {'/'.join(units)}, running bf16"


def resolve_dtype(
    torch, precision: str, device, model: str, *, bf16_matches_fp32: bool = False, flags=None
) -> "torch.dtype":
    """The torch dtype for ``precision`` on ``device``; on a CPU as :func:`cpu_precision` decides (logged).

    ``flags``: the CPU's feature flags; None reads them from ``/proc/cpuinfo``.
    """
    if precision not in PRECISIONS:
        raise BadInput(f"{model} precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cpu":
        if precision == "bf16" and flags is None:
            flags = cpu.cpu_flags()
        precision, why = cpu_precision(precision, flags or frozenset(), bf16_matches_fp32=bf16_matches_fp32)
        if why:
            log.log(logging.INFO if precision == "bf16" else logging.WARNING, "%s: %s", model, why)
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def precision_name(dtype) -> str:
    """``torch.float16`` → ``fp16`` (what the report records as the precision that ran)."""
    names = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
    return names.get(str(dtype), str(dtype))


def release(device) -> None:
    """After dropping a model: collect it, and hand cached GPU memory back when it lived on CUDA."""
    import gc

    gc.collect()
    if getattr(device, "type", "") == "cuda":
        import torch

        torch.cuda.empty_cache()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's thread count set to ``threads`` inside the block and put back after; None changes nothing."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
