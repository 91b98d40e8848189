"""Regenerate samples/apple.jpg, the procedural sample photo (a red apple on a wooden table; no downloaded images).

    python samples/make_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def render() -> Image.Image:
    """The sample as a 640×480 RGB image."""
    W, H = 640, 480
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.zeros((H, W, 3), np.float32)
    # wall: warm grey gradient with a soft light spot
    wall = np.stack([0.78 - 0.15 * y / H, 0.76 - 0.15 * y / H, 0.72 - 0.12 * y / H], -1)
    spot = np.exp(-(((x - 180) / 260) ** 2 + ((y - 90) / 200) ** 2))[..., None] * 0.12
    img[:] = wall + spot
    # table: wood grain below the horizon
    table = y > 300
    grain = 0.5 + 0.5 * np.sin(x / 9.0 + 3 * np.sin(y / 23.0) + rng.standard_normal((H, W)) * 0.15)
    wood = np.stack([0.55 + 0.12 * grain, 0.36 + 0.08 * grain, 0.20 + 0.05 * grain], -1)
    img[table] = wood[table]
    # apple: shaded sphere
    cx, cy, r = 330, 260, 110
    d = np.sqrt(((x - cx) / r) ** 2 + ((y - cy) / (r * 0.95)) ** 2)
    inside = d < 1
    nz = np.sqrt(np.clip(1 - d ** 2, 0, 1))
    nxv, nyv = (x - cx) / r, (y - cy) / r
    light = np.clip(-0.5 * nxv - 0.6 * nyv + 0.62 * nz, 0, 1)
    apple = np.stack([0.35 + 0.6 * light, 0.05 + 0.12 * light, 0.05 + 0.08 * light], -1)
    spec = np.exp(-(((x - 290) / 18) ** 2 + ((y - 205) / 12) ** 2))[..., None] * 0.6
    apple = apple + spec
    # shadow on the table
    shadow = np.exp(-(((x - cx - 40) / 150) ** 2 + ((y - 372) / 22) ** 2))[..., None]
    img = img * (1 - 0.45 * shadow * table[..., None])
    img[inside] = apple[inside]
    # stem and leaf
    stem = (np.abs(x - cx - 4 + (y - 150) * 0.25) < 4) & (y > 130) & (y < 165)
    img[stem] = (0.30, 0.20, 0.10)
    leaf = (((x - 372) / 42) ** 2 + ((y - 140) / 16) ** 2 < 1)
    img[leaf] = np.stack([0.20 + 0.1 * grain, 0.55 + 0.1 * grain, 0.18 + 0 * grain], -1)[leaf]
    img += rng.standard_normal(img.shape) * 0.012  # sensor noise
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))


if __name__ == "__main__":
    render().save(Path(__file__).with_name("apple.jpg"), quality=88)
