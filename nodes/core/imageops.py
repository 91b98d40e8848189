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


def box_blur(image: np.ndarray, radius: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Mean over a ``radius×radius`` window with mirrored edges (like OpenCV's ``blur``); float32.

    ``H×W`` or ``H×W×C``. Works one band of columns (then rows) at a time, so besides the float32
    result (``out``, which may be ``image`` itself) it needs memory for a band, not the image.
    """
    radius = max(1, int(radius))
    if out is None:
        out = np.array(image, dtype=np.float32, copy=True)
    elif out is not image:
        out[...] = image
    for axis in (0, 1):
        n = out.shape[axis]
        if n == 1:
            continue
        before, after = min(radius // 2, n - 1), min(radius - radius // 2 - 1, n - 1)
        width = before + after + 1  # windows that hit a short edge are averaged over what exists
        other = out.shape[1 - axis]
        for start in range(0, other, BAND_ROWS):
            band = (slice(None), slice(start, start + BAND_ROWS)) if axis == 0 else (slice(start, start + BAND_ROWS), slice(None))
            values = out[band]
            pad = [(0, 0)] * values.ndim
            pad[axis] = (before, after)
            sums = np.cumsum(np.pad(values, pad, mode="reflect"), axis=axis, dtype=np.float64)
            upper = np.take(sums, np.arange(width - 1, width - 1 + n), axis=axis)
            lower = np.take(sums, np.arange(-1, n - 1), axis=axis)
            if n:  # the window starting at the first element has nothing before it
                index = [slice(None)] * values.ndim
                index[axis] = 0
                lower[tuple(index)] = 0.0
            values[...] = (upper - lower) / width
    return out


def _blur_fusion_plane(image, fg, bg, alpha, blurred_alpha, radius):
    """One colour plane of a blur-fusion pass: the new foreground and the blurred background.

    ``F = Bf + a·(I − a·Bf − (1 − a)·Bb)`` with ``Bf = blur(F·a) / blur(a)`` and
    ``Bb = blur(B·(1 − a)) / blur(1 − a)``; computed in place on two planes.
    """
    blurred_f = fg * alpha
    box_blur(blurred_f, radius, out=blurred_f)
    blurred_f /= blurred_alpha + 1e-5
    blurred_b = bg * (1 - alpha)
    box_blur(blurred_b, radius, out=blurred_b)
    blurred_b /= (1 - blurred_alpha) + 1e-5
    # F = Bf·(1 − a²) + a·I − a·(1 − a)·Bb, one term at a time
    new = image * alpha
    new += blurred_f * (1 - alpha * alpha)
    del blurred_f
    new -= blurred_b * (alpha * (1 - alpha))
    np.clip(new, 0.0, 1.0, out=new)
    return new, blurred_b


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Foreground colours with the background's colour bleed removed from soft edges; ``H×W×3`` float32.

    Two-pass blur-fusion estimate (Forte & Pitié, "Approximate Fast Foreground Colour
    Estimation", 2021): a wide pass for the colours, a narrow one to refine them. The radii are
    scaled to the image so small and large images get the same look. One colour plane at a time
    (the estimate of each is independent given alpha), so the working memory is a few planes;
    ``out`` (``H×W×3`` float32, may be ``image``) receives the result.
    """
    scale = max(image.shape[:2]) / 1024.0
    wide, narrow = max(3, round(90 * scale)), max(1, round(6 * scale))
    alpha = np.asarray(alpha, dtype=np.float32)
    blurred_wide, blurred_narrow = box_blur(alpha, wide), box_blur(alpha, narrow)
    if out is None:
        out = np.empty(image.shape, np.float32)
    for c in range(image.shape[2]):
        plane = np.ascontiguousarray(image[..., c], dtype=np.float32)
        fg, bg = _blur_fusion_plane(plane, plane, plane, alpha, blurred_wide, wide)
        fg, _ = _blur_fusion_plane(plane, fg, bg, alpha, blurred_narrow, narrow)
        del bg
        out[..., c] = fg
    return out


def to_uint8(image: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """A float 0..1 image as uint8 (rounded to nearest, NaN as 0), a band of rows at a time; uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    if out is None:
        out = np.empty(image.shape, np.uint8)
    for top in range(0, image.shape[0], BAND_ROWS):
        band = np.nan_to_num(np.clip(image[top : top + BAND_ROWS], 0.0, 1.0).astype(np.float32, copy=False), copy=False)
        band *= 255.0
        np.rint(band, out=band)
        out[top : top + BAND_ROWS] = band
    return out


def resize_to_uint8(image: np.ndarray, width: int, height: int, *, rows: int = BAND_ROWS // 4) -> np.ndarray:
    """Bilinear upscale of a small ``h×w×C`` float 0..1 image to ``height×width×C`` uint8, row band by row band.

    Sample centres are aligned as Pillow's resize aligns them (pixel ``i`` of the output samples
    the input at ``(i + 0.5)·h/height − 0.5``, clamped at the edges).
    """
    small = np.asarray(image, dtype=np.float32)
    h, w = small.shape[:2]

    def taps(n_out, n_in):
        pos = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.minimum(pos.astype(np.int64), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (pos - low).astype(np.float32)

    x0, x1, fx = taps(width, w)
    y0, y1, fy = taps(height, h)
    fx = fx[None, :, None]
    out = np.empty((height, width, small.shape[2]), np.uint8)
    for top in range(0, height, rows):
        sl = slice(top, min(top + rows, height))
        wy = fy[sl, None, None]
        band = small[y0[sl]] * (1 - wy) + small[y1[sl]] * wy  # rows × w × C
        band = band[:, x0] * (1 - fx) + band[:, x1] * fx  # rows × width × C
        to_uint8(band, out=out[sl])
    return out


def rgba_uint8(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The ``H×W×3`` float 0..1 image with its ``H×W`` alpha as one ``H×W×4`` uint8 RGBA image, made a
    band of rows at a time (a quarter of the memory of the float cutout, and what the PNG stores)."""
    out = np.empty((*image.shape[:2], 4), np.uint8)
    for top in range(0, image.shape[0], BAND_ROWS):
        rows = slice(top, top + BAND_ROWS)
        to_uint8(image[rows], out=out[rows, :, :3])
        to_uint8(alpha[rows], out=out[rows, :, 3])
    return out


def as_float(image: np.ndarray) -> np.ndarray:
    """A uint8 image (or band) as float32 0..1; a float image passes through."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    return image


def shown_uint8(image: np.ndarray, color: np.ndarray) -> np.ndarray:
    """An ``H×W×C`` image (C 1, 3 or 4; uint8 or float, clipped to 0..1) as it is seen: grey expanded,
    RGBA composited over ``color`` (a cutout keeps the removed background's colours under alpha 0;
    dropping alpha would show them); ``H×W×3`` uint8, made a band of rows at a time, ``image`` untouched."""
    shown = np.empty((*image.shape[:2], 3), np.uint8)
    for top in range(0, image.shape[0], BAND_ROWS):
        band = as_float(image[top : top + BAND_ROWS])
        rgb = np.clip(np.repeat(band, 3, axis=-1) if band.shape[-1] == 1 else band[..., :3], 0.0, 1.0)
        if band.shape[-1] == 4:
            cutout(rgb, np.clip(band[..., 3], 0.0, 1.0), color=color, out=rgb)
        to_uint8(rgb, out=shown[top : top + BAND_ROWS])
    return shown


def cutout(image: np.ndarray, alpha: np.ndarray, *, color: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """RGBA (``color`` None) or RGB composited over ``color``; ``image`` is ``H×W×3`` (clipped to 0..1 here).

    ``out`` (``H×W×4`` or ``H×W×3`` float32, which may be ``image`` itself when compositing)
    receives the result without another full-size copy.
    """
    if out is None:
        out = np.empty((*image.shape[:2], 4 if color is None else 3), np.float32)
    if color is None:
        out[..., :3] = image
        np.clip(out[..., :3], 0.0, 1.0, out=out[..., :3])
        out[..., 3] = alpha
        return out
    if out is not image:
        out[...] = image
    np.clip(out, 0.0, 1.0, out=out)
    color = color.reshape(1, 1, 3).astype(np.float32)
    out -= color  # (c - k)·a + k, in place
    out *= alpha[..., None]
    out += color
    return out
