"""A photo-like test image made procedurally: a shaded object on a textured, graded background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def make_photo(path: Path, width: int = 320, height: int = 240, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([0.55 + 0.25 * yy / height, 0.70 + 0.1 * yy / height, 0.95 - 0.2 * yy / height], axis=-1)
    ground = yy > height * 0.65
    sky[ground] = np.array([0.35, 0.45, 0.25]) + 0.05 * rng.standard_normal((ground.sum(), 3))
    cx, cy, rx, ry = width * 0.5, height * 0.55, width * 0.16, height * 0.3
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    shade = np.clip(1.0 - 0.6 * (xx - cx + rx) / (2 * rx), 0.3, 1.0)
    vase = np.stack([0.15 * shade, 0.2 * shade, 0.85 * shade], axis=-1)
    image = np.where(inside[..., None], vase, sky) + 0.02 * rng.standard_normal((height, width, 3))
    pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    pil.save(path, quality=92)
    return path
