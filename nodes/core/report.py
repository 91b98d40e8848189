"""The Cutout Guard report: one PNG per image carrying its caption and verdict.

The PNG's ``iTXt`` chunk ``cutout_guard`` holds UTF-8 JSON (schema 1, fields below) and the same
JSON is written beside it as ``<stem>.json``. The PNG is RGBA when background removal ran, else
the input image; an image judged unsafe is kept, blurred or withheld (fully transparent, same
size) as ``unsafe_action`` says. Written by the Save Cutout Report node and the command line;
read back by API clients (``read_png``) — the RunPod worker returns only images, so the text
travels inside the PNG.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .imageops import box_blur

SCHEMA = 1
CHUNK = "cutout_guard"
UNSAFE_ACTIONS = ("keep", "blur", "withhold")
FIELDS = (
    "schema", "caption", "task", "safe", "p_unsafe", "categories", "threshold",
    "unsafe_action", "models", "devices", "seconds",
)


def make_report(
    *,
    caption: str | None = None,
    task: str | None = None,
    safe: bool | None = None,
    p_unsafe: float | None = None,
    categories: list[dict[str, str]] | None = None,
    threshold: float | None = None,
    unsafe_action: str | None = None,
    models: dict[str, str | None] | None = None,
    devices: dict[str, Any] | None = None,
    seconds: dict[str, float] | None = None,
) -> dict:
    """A schema-1 report; fields that did not apply are ``None``."""
    if unsafe_action is not None and unsafe_action not in UNSAFE_ACTIONS:
        raise ValueError(f"unsafe_action must be one of {UNSAFE_ACTIONS}, got {unsafe_action!r}")
    return {
        "schema": SCHEMA,
        "caption": caption,
        "task": task,
        "safe": safe,
        "p_unsafe": None if p_unsafe is None else float(p_unsafe),
        "categories": [{"code": c["code"], "name": c["name"]} for c in (categories or [])] if safe is not None else None,
        "threshold": threshold,
        "unsafe_action": unsafe_action,
        "models": {"ben2": None, "florence2": None, "llama_guard": None, **(models or {})},
        "devices": {"provider": None, "precision": None, "n_gpu_layers": None, **(devices or {})},
        "seconds": {k: round(float(v), 4) for k, v in (seconds or {}).items()},
    }


def apply_unsafe_action(image: np.ndarray, action: str) -> np.ndarray:
    """``H×W×C`` float 0..1 image as it may be shown when judged unsafe."""
    if action == "keep":
        return image
    if action == "withhold":
        return np.zeros((*image.shape[:2], 4), dtype=np.float32)
    if action == "blur":
        box = max(4, max(image.shape[:2]) // 16)  # box width; three passes blur like a Gaussian
        if image.shape[-1] != 4:
            return _blur(image, box)
        # Blur premultiplied colour, so the removed background's colours (still stored under
        # alpha 0 in a cutout) do not bleed into the visible blur.
        alpha = image[..., 3:4]
        blurred = _blur(np.concatenate([image[..., :3] * alpha, alpha], axis=-1), box)
        coverage = blurred[..., 3:4]
        rgb = np.divide(blurred[..., :3], coverage, out=np.zeros_like(blurred[..., :3]), where=coverage > 1e-6)
        return np.concatenate([np.clip(rgb, 0.0, 1.0), coverage], axis=-1)
    raise ValueError(f"unsafe_action must be one of {UNSAFE_ACTIONS}, got {action!r}")


def _blur(image: np.ndarray, box: int) -> np.ndarray:
    """A near-Gaussian blur of an ``H×W×C`` float image: three box blurs of width ``box``."""
    for _ in range(3):
        image = box_blur(image, box)
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_png(image: np.ndarray, report: dict, *, compress_level: int = 4) -> bytes:
    """PNG bytes of ``image`` (``H×W×3`` or ``H×W×4``) with the report in an iTXt chunk."""
    info = PngInfo()
    info.add_itxt(CHUNK, json.dumps(report, ensure_ascii=False), zip=False)
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def write(png_path: str | Path, image: np.ndarray, report: dict) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.json`` atomically; return both paths."""
    png_path = Path(png_path)
    json_path = png_path.with_suffix(".json")
    _atomic_write(png_path, encode_png(image, report))
    _atomic_write(json_path, (json.dumps(report, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return png_path, json_path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_png(source: bytes | str | Path) -> dict:
    """The report inside a Cutout Guard PNG (bytes or a path); ValueError when there is none."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            text = image.text.get(CHUNK)  # type: ignore[attr-defined]
    except Exception as exc:
        raise ValueError(f"not a readable PNG: {exc}") from None
    if text is None:
        raise ValueError(f"the PNG has no '{CHUNK}' text chunk: it was not written by Cutout Guard's Save Cutout Report")
    report = json.loads(text)
    if report.get("schema") != SCHEMA:
        raise ValueError(f"unsupported report schema {report.get('schema')!r} (this version reads {SCHEMA})")
    return report
