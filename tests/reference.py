"""Independent numpy re-implementations used as references by the tests."""

from __future__ import annotations

import numpy as np


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """``out×in`` matrix of Pillow's bilinear resampling (a triangle filter widened when shrinking)."""
    scale = in_size / out_size
    support_scale = max(scale, 1.0)
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support_scale + 0.5), 0)
        hi = min(int(center + support_scale + 0.5), in_size)
        x = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((x - center + 0.5) / support_scale), 0.0, None)
        weights[i, lo:hi] = w / w.sum()
    return weights


def resize(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    rows = bilinear_weights(plane.shape[0], height)
    cols = bilinear_weights(plane.shape[1], width)
    return rows @ plane.astype(np.float64) @ cols.T


def box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Direct window mean with mirrored (reflect-101) edges, one pixel at a time."""
    before, after = radius // 2, radius - radius // 2 - 1
    out = np.empty(image.shape, dtype=np.float64)

    def mirror(i, n):
        while i < 0 or i >= n:
            i = -i if i < 0 else 2 * (n - 1) - i
        return i

    h, w = image.shape[:2]
    for y in range(h):
        for x in range(w):
            ys = [mirror(y + d, h) for d in range(-before, after + 1)]
            xs = [mirror(x + d, w) for d in range(-before, after + 1)]
            out[y, x] = image[np.ix_(ys, xs)].mean(axis=(0, 1))
    return out
