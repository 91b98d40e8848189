"""Image files to ``H×W×3`` float32 RGB in 0..1, for the command line (numpy + Pillow).

Every mode Pillow decodes is scaled by its own range, never clipped: 8-bit and 1-bit by 255,
16-bit grey (``I;16*``) by 65535, 32-bit integers (``I``) by their bits per sample, 32-bit float
(``F``) taken as 0..1 (the float convention) and clipped there; Pillow decodes 16-bit RGB(A) PNGs
to 8 bits per channel itself. EXIF orientation is applied. An embedded ICC profile is converted to
sRGB where Pillow's colour management can convert that mode (8-bit RGB, RGBA, L, LA, CMYK); where
it cannot, the values are used as they are and a warning says so. Transparent pixels (an alpha
channel, or a palette or grey image with a transparent colour) are composited on white, the
background the caption is made on. Non-finite float pixels are refused.

The pixel limit is checked on the size in the file's header, before any pixel is decoded, and
the error names that limit (``--max-pixels``); Pillow's own decompression-bomb check is left out
of the way while the file opens, so only one limit ever applies.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import BadInput
from .imageops import BAND_ROWS

log = logging.getLogger(__name__)

# The largest image (width × height) read or processed by default, set from a measurement: with
# BEN2's real architecture and the 1B guard, `cutout-guard run` (one model at a time) peaks at
# 2.71 GiB on a 1 MP photo and 2.86 GiB on a 16 MP one (4608×3456), its largest stage being the
# cutout (`python -m devtools.bench.stage_memory`), so an image at this limit fits a 4 GiB worker.
# ComfyUI holds float32 tensors (~64 bytes a pixel): README, "Memory in ComfyUI", says what fits there.
DEFAULT_MAX_PIXELS = 16_000_000
WHITE = 1.0
_ICC_MODES = {"RGB": "RGB", "RGBA": "RGBA", "L": "RGB", "LA": "RGBA", "CMYK": "RGB"}


def pixel_limit_problem(width: int, height: int, max_pixels: int, *, flag: str = "--max-pixels") -> str | None:
    """Why a ``width×height`` image is over ``max_pixels`` (naming the setting that sets it), or None."""
    if max_pixels and width * height > max_pixels:
        return (
            f"image too large ({width}×{height} = {width * height:,} pixels); the limit is {max_pixels:,} pixels "
            f"({flag}), set so that an image at the limit fits a 4 GB worker — raise {flag} if this "
            "machine has the memory for it"
        )
    return None


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as ``H×W×3`` float32 RGB in 0..1; BadInput naming the file when it cannot be."""
    path = Path(path)
    try:
        with _opened(path) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise BadInput(f"{path}: empty image ({width}×{height})")
            problem = pixel_limit_problem(width, height, max_pixels)
            if problem:
                raise BadInput(f"{path}: {problem}")
            image.load()
            bits = _bits_per_sample(image)
            rgb = to_rgb_float(ImageOps.exif_transpose(image), label=str(path), bits=bits)
    except BadInput:
        raise
    except UnidentifiedImageError:
        raise BadInput(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadInput(f"{path}: damaged image file ({type(exc).__name__}: {exc})") from None
    return rgb


class _opened:
    """``Image.open`` with Pillow's bomb check off while the header is read (ours applies instead)."""

    def __init__(self, path: Path):
        self.path = path
        self.image = None

    def __enter__(self):
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.image = Image.open(self.path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous
        return self.image

    def __exit__(self, *exc):
        self.image.close()


def to_rgb_float(image: Image.Image, *, label: str = "image", bits: int = 16) -> np.ndarray:
    """A decoded Pillow image as ``H×W×3`` float32 RGB in 0..1 (see the module docstring).

    ``bits``: the bits per sample of an ``I`` (32-bit integer) image's file.
    """
    image = _to_srgb(image, label)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scaled_grey(image, label, bits)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("L", "RGB") and "transparency" in image.info:
        image = image.convert("LA" if image.mode == "L" else "RGBA")
    if image.mode not in ("RGB", "RGBA", "L", "LA", "1"):
        image = image.convert("RGBA" if image.mode in ("PA", "La", "RGBa") or "A" in image.mode else "RGB")
    width, height = image.size
    out = np.empty((height, width, 3), np.float32)
    for top in range(0, height, BAND_ROWS):
        band = np.asarray(image.crop((0, top, width, min(top + BAND_ROWS, height))))
        rows = out[top : top + band.shape[0]]
        if band.dtype == bool:  # mode "1"
            band = band.astype(np.uint8) * 255
        if band.ndim == 2:
            band = band[..., None]
        colour = band[..., :3] if band.shape[-1] >= 3 else band[..., :1]
        np.multiply(colour, np.float32(1 / 255), out=rows, casting="unsafe")
        if band.shape[-1] in (2, 4):  # composite on white: c·a + 1·(1 − a)
            alpha = band[..., -1:].astype(np.float32) * np.float32(1 / 255)
            rows *= alpha
            rows += WHITE - alpha
    return out


def _scaled_grey(image: Image.Image, label: str, bits: int) -> np.ndarray:
    """16-bit, 32-bit integer or float grey as RGB float32 in 0..1."""
    if image.mode == "F":
        plane = np.asarray(image, dtype=np.float32)
        if not np.isfinite(plane).all():
            raise BadInput(f"{label}: the float image has NaN or infinite pixels — save it without them")
        scale = 1.0
    elif image.mode.startswith("I;16"):
        plane = np.asarray(image)
        scale = 65535.0
    else:  # "I": 32-bit signed integers holding the file's samples
        plane = np.asarray(image)
        scale = float(2**bits - 1)
    grey = np.clip(plane.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    if "transparency" in image.info and image.mode != "F":
        grey[plane == image.info["transparency"]] = WHITE
    return np.repeat(grey[..., None], 3, axis=-1)


def _bits_per_sample(image: Image.Image) -> int:
    """Bits per sample of an ``I`` image as stored in its file (TIFF tag 258; 16 for PNG)."""
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0]
    if image.format == "PNG" or bits is None:
        return 16  # Pillow's "I" PNGs come from 16-bit files
    return int(bits)


def _to_srgb(image: Image.Image, label: str) -> Image.Image:
    """``image`` with its embedded ICC profile converted to sRGB, when Pillow can convert its mode."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    if image.mode not in _ICC_MODES:
        log.warning("%s: its ICC colour profile is not applied (Pillow cannot convert %s images); colours are used as stored", label, image.mode)
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image, source, ImageCms.createProfile("sRGB"), outputMode=_ICC_MODES[image.mode]
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.warning("%s: its ICC colour profile could not be applied (%s); colours are used as stored", label, exc)
        return image
    converted.info = {k: v for k, v in image.info.items() if k != "icc_profile"}
    return converted
