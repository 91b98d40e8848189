"""Device and precision for the engines that run on torch (Florence-2, the image guard).

``device`` is a torch device string (``cpu``, ``cuda``, ``cuda:1``); ``precision`` is ``fp32``,
``fp16`` or ``bf16``. On a CPU device half precision runs as fp32 (several CPU kernels have no
half version, e.g. "LayerNormKernelImpl not implemented for 'Half'"), logged once per load.
torch is passed in by the caller, which imported it when its model loaded.
"""

from __future__ import annotations

import contextlib
import logging

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


def resolve_dtype(torch, precision: str, device, model: str) -> "torch.dtype":
    """The torch dtype for ``precision`` on ``device``: fp16/bf16 on a CPU run as fp32 (logged)."""
    if precision not in PRECISIONS:
        raise BadInput(f"{model} precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and device.type == "cpu":
        log.warning(
            "%s: precision %s is not supported on the CPU (half-precision CPU kernels are missing); "
            "running in fp32 instead",
            model,
            precision,
        )
        return torch.float32
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
