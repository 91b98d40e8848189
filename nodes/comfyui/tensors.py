"""ComfyUI's tensor conventions, decided once.

IMAGE is a torch tensor ``[B,H,W,C]`` float 0..1 (C is 3, sometimes 4); MASK is ``[B,H,W]``.
The pack's masks use **1.0 = subject** (the alpha of the cutout), the convention of background
removal nodes; ComfyUI's own LoadImage mask is the opposite (1 − alpha). Engines work on numpy
``H×W×3`` float32 frames. torch is imported when a function runs, not when the pack is imported.
"""

from __future__ import annotations

import os

import numpy as np

from ..core import imageops
from ..core.errors import BadInput
from ..core.imagefile import DEFAULT_MAX_PIXELS, pixel_limit_problem

MAX_PIXELS_VARIABLE = "CUTOUT_GUARD_MAX_PIXELS"  # the nodes' image size limit (the CLI's --max-pixels)
NON_FINITE = (
    "has NaN or infinite pixel values ({count:,} of {total:,} values, image {index} of the batch) — "
    "the node that made this image produced undefined pixels; fix it or its settings (nothing is replaced)"
)


def max_pixels() -> int:
    """The largest image (width × height) the nodes process: ``$CUTOUT_GUARD_MAX_PIXELS``, else the CLI's default."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(value.replace("_", ""))
    except ValueError:
        raise BadInput(f"{MAX_PIXELS_VARIABLE}={value!r} is not a whole number of pixels — fix or unset it") from None


def batch_size(image, where: str = "IMAGE input") -> int:
    """Number of images in an IMAGE batch; a clear error naming ``where`` for an empty, zero-sized,
    malformed or too large batch, or one with NaN or infinite values (``where``: the node and input,
    e.g. "Save Cutout Report: input 'images'"). Every node calls it before its model runs."""
    if image is None or getattr(image, "ndim", 0) != 4:
        shape = tuple(getattr(image, "shape", ()))
        raise BadInput(f"{where}: expected an IMAGE batch [B,H,W,C], got shape {shape}")
    if image.shape[0] == 0:
        raise BadInput(f"{where}: the IMAGE batch is empty — connect a node that outputs at least one image")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise BadInput(
            f"{where}: the images have zero height or width (shape {tuple(image.shape)}) — "
            "check the crop, resize or mask node before it"
        )
    if image.shape[-1] not in (1, 3, 4):
        raise BadInput(f"{where}: expected 1, 3 or 4 channels, got {image.shape[-1]}")
    problem = pixel_limit_problem(int(image.shape[2]), int(image.shape[1]), max_pixels(), flag=MAX_PIXELS_VARIABLE)
    if problem:
        raise BadInput(f"{where}: {problem}")
    for index in range(image.shape[0]):  # one image at a time: a bool copy of one frame at most
        finite = image[index].isfinite()
        if not bool(finite.all()):
            count = int(finite.numel() - finite.sum())
            raise BadInput(f"{where} " + NON_FINITE.format(count=count, total=finite.numel(), index=index))
    return int(image.shape[0])


def frame_array(image, index: int) -> np.ndarray:
    """Image ``index`` of a batch as ``H×W×C`` float32, every channel kept (it may share the tensor's memory)."""
    return image[index].detach().to("cpu").float().numpy()


def colour_view(image, index: int) -> np.ndarray:
    """Image ``index`` as ``H×W×3`` float32 colour without a copy where the tensor allows (an RGB or
    RGBA float32 CPU tensor): values are not clipped — the engines clip what they compute from it."""
    array = frame_array(image, index)
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return array[..., :3]


def shown_frame(image, index: int, background: np.ndarray) -> np.ndarray:
    """Image ``index`` as it is seen, ``H×W×3`` uint8 (what the image processors take): an RGBA
    frame composited over ``background`` (a cutout keeps the removed background's colours under
    alpha 0; dropping alpha would show them). Made a band of rows at a time: no full-size float copy."""
    return imageops.shown_uint8(frame_array(image, index), background)


def _batch(arrays) -> np.ndarray:
    if isinstance(arrays, np.ndarray):  # already a batch: share its memory
        return arrays.astype(np.float32, copy=False)
    return np.stack(arrays, axis=0).astype(np.float32, copy=False)


def to_image(arrays):
    """``H×W×C`` float arrays (a list, or one ``B×H×W×C`` array) as an IMAGE tensor."""
    import torch

    return torch.from_numpy(_batch(arrays))


def to_mask(alphas):
    """``H×W`` alpha maps (1 = subject; a list, or one ``B×H×W`` array) as a MASK tensor."""
    import torch

    return torch.from_numpy(_batch(alphas))
