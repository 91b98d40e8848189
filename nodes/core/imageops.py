"""Image arithmetic shared by the engines, the nodes and the command line (numpy + Pillow).

Images are ``H×W×C`` float32 in 0..1; alpha maps are ``H×W`` float32 in 0..1 (1 = subject).
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from .errors import BadInput

HEX_COLOR = re.compile(r"^#?([0-9a-fA-F]{6})$")
BAND_ROWS = 256  # rows per band where a whole-image temporary is avoided


def resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of one float plane; antialiased when shrinking (Pillow's filter)."""
    plane = np.ascontiguousarray(plane, dtype=np.float32)
    if plane.shape == (height, width):
        return plane.copy()
    out = Image.fromarray(plane, mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an ``H×W×C`` or ``H×W`` float image."""
    if image.ndim == 2:
        return resize_plane(image, width, height)
    return np.stack([resize_plane(image[..., c], width, height) for c in range(image.shape[2])], axis=-1)


def parse_color(text: str) -> np.ndarray:
    """``#RRGGBB`` (the ``#`` optional) as an RGB float32 triple in 0..1."""
    match = HEX_COLOR.match(text.strip())
    if not match:
        raise BadInput(f"background colour {text!r} is not a hex colour like #00FF00 — fix the 'color' input")
    value = match.group(1)
    return np.array([int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4)], dtype=np.float32)


def box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``radius×radius`` window with mirrored edges (like OpenCV's ``blur``)."""
    radius = max(1, int(radius))
    out = image.astype(np.float32, copy=True)
    before, after = radius // 2, radius - radius // 2 - 1
    for axis in (0, 1):
        n = out.shape[axis]
        if n == 1:
            continue
        pad = [(0, 0)] * out.ndim
        pad[axis] = (min(before, n - 1), min(after, n - 1))
        padded = np.pad(out, pad, mode="reflect")
        # windows that hit a short edge are averaged over what exists
        cs = np.cumsum(padded, axis=axis, dtype=np.float64)
        zero = np.zeros_like(np.take(cs, [0], axis=axis))
        cs = np.concatenate([zero, cs], axis=axis)
        width = pad[axis][0] + pad[axis][1] + 1
        upper = np.take(cs, np.arange(width, width + n), axis=axis)
        lower = np.take(cs, np.arange(0, n), axis=axis)
        out = ((upper - lower) / width).astype(np.float32)
    return out


def _blur_fusion(image, fg, bg, alpha, radius):
    a = alpha[..., None]
    blurred_a = box_blur(a, radius)
    blurred_f = box_blur(fg * a, radius) / (blurred_a + 1e-5)
    blurred_b = box_blur(bg * (1 - a), radius) / ((1 - blurred_a) + 1e-5)
    fg = blurred_f + a * (image - a * blurred_f - (1 - a) * blurred_b)
    return np.clip(fg, 0.0, 1.0), blurred_b


def estimate_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Foreground colours with the background's colour bleed removed from soft edges.

    Two-pass blur-fusion estimate (Forte & Pitié, "Approximate Fast Foreground Colour
    Estimation", 2021): a wide pass for the colours, a narrow one to refine them. The radii are
    scaled to the image so small and large images get the same look.
    """
    scale = max(image.shape[:2]) / 1024.0
    fg, bg = _blur_fusion(image, image, image, alpha, max(3, round(90 * scale)))
    fg, _ = _blur_fusion(image, fg, bg, alpha, max(1, round(6 * scale)))
    return fg.astype(np.float32)


def cutout(image: np.ndarray, alpha: np.ndarray, *, color: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """RGBA (``color`` None) or RGB composited over ``color``; ``image`` is ``H×W×3``.

    ``out`` (``H×W×4`` or ``H×W×3`` float32, which may be ``image`` itself when compositing)
    receives the result without another full-size copy.
    """
    if out is None:
        out = np.empty((*image.shape[:2], 4 if color is None else 3), np.float32)
    if color is None:
        out[..., :3] = image
        out[..., 3] = alpha
        return out
    if out is not image:
        out[...] = image
    color = color.reshape(1, 1, 3).astype(np.float32)
    out -= color  # (c - k)·a + k, in place
    out *= alpha[..., None]
    out += color
    return out
