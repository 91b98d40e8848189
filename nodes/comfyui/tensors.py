"""ComfyUI's tensor conventions, decided once.

IMAGE is a torch tensor ``[B,H,W,C]`` float 0..1 (C is 3, sometimes 4); MASK is ``[B,H,W]``.
The pack's masks use **1.0 = subject** (the alpha of the cutout), the convention of background
removal nodes; ComfyUI's own LoadImage mask is the opposite (1 − alpha). Engines work on numpy
``H×W×3`` float32 frames. torch is imported when a function runs, not when the pack is imported.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..core import imageops
from ..core.errors import BadInput


def batch_size(image) -> int:
    """Number of images in an IMAGE batch; a clear error for an empty or malformed batch."""
    if image is None or getattr(image, "ndim", 0) != 4:
        shape = tuple(getattr(image, "shape", ()))
        raise BadInput(f"expected an IMAGE batch [B,H,W,C], got shape {shape}")
    if image.shape[0] == 0:
        raise BadInput("the IMAGE batch is empty — connect a node that outputs at least one image")
    if image.shape[-1] not in (1, 3, 4):
        raise BadInput(f"expected 1, 3 or 4 channels, got {image.shape[-1]}")
    return int(image.shape[0])


def frame(image, index: int) -> np.ndarray:
    """Image ``index`` of a batch as ``H×W×3`` float32 RGB (alpha dropped, grey expanded)."""
    array = image[index].detach().to("cpu").float().numpy()
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array[..., :3], 0.0, 1.0).astype(np.float32, copy=False)


def shown_frame(image, index: int, background: np.ndarray) -> np.ndarray:
    """Image ``index`` as it is seen, ``H×W×3`` float32: an RGBA frame composited over ``background``
    (a cutout keeps the removed background's colours under alpha 0; dropping alpha would show them)."""
    rgb = frame(image, index)
    if image.shape[-1] != 4:
        return rgb
    alpha = np.clip(image[index, ..., 3].detach().to("cpu").float().numpy(), 0.0, 1.0)
    return imageops.cutout(rgb, alpha, color=background)


def frames(image) -> Iterator[np.ndarray]:
    for index in range(batch_size(image)):
        yield frame(image, index)


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
