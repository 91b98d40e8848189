"""The Cutout Guard report: one PNG per image carrying its caption and verdicts.

The PNG's ``iTXt`` chunk ``cutout_guard`` holds UTF-8 JSON and the same JSON is written beside it
as ``<stem>.json``. Schema 2 (written now):

    {"schema": 2, "caption", "task", "safe",
     "image": {"model", "safe", "p_unsafe", "threshold", "reason", "label"} | null,
     "text":  {"model", "safe", "p_unsafe", "threshold", "reason", "categories": [{"code", "name"}]} | null,
     "unsafe_action", "models": {"ben2", "florence2", "llama_guard", "image_guard"},
     "devices": {"provider", "precision", "n_gpu_layers"}, "seconds": {stage: s}}

``image`` is the image-level check, ``text`` the caption's check; a check that did not run is
``null``. ``safe`` is true only when every check that ran says safe, ``null`` when none ran.
Schema 1 (read, never written) had one verdict at the top level (``safe``, ``p_unsafe``,
``categories``, ``threshold``): :func:`upgrade` turns it into the schema-2 layout.

The PNG is RGBA when background removal ran, else the input image; an image judged unsafe is
kept, blurred or withheld (fully transparent, same size) as ``unsafe_action`` says. Written by the
Save Cutout Report node and the command line; read back by API clients (``read_png``) — the RunPod
worker returns only images, so the text travels inside the PNG. Whatever reads a verdict accepts
only JSON ``true`` as safe (:func:`read_verdict`, :func:`report_safe`).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import imageops
from .vocab import UNSAFE_ACTIONS
from .text import encodable

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)  # read_png and upgrade() read both; make_report writes 2
CHUNK = "cutout_guard"
CHECKS = ("image", "text")  # the checks a report carries: the image itself, and its caption
FIELDS = ("schema", "caption", "task", "safe", *CHECKS, "unsafe_action", "models", "devices", "seconds", "replaced_text")
CHECK_FIELDS = ("model", "safe", "p_unsafe", "threshold", "reason")  # text adds categories, image label


def overall_safe(checks: dict[str, dict | None]) -> bool | None:
    """True only when every check that ran says safe (JSON ``true``); None when none ran."""
    ran = [check for check in checks.values() if check is not None]
    if not ran:
        return None
    return all(isinstance(check, dict) and check.get("safe") is True for check in ran)


def make_report(
    *,
    caption: str | None = None,
    task: str | None = None,
    image: dict | None = None,
    text: dict | None = None,
    unsafe_action: str | None = None,
    models: dict[str, str | None] | None = None,
    devices: dict[str, Any] | None = None,
    seconds: dict[str, float] | None = None,
) -> dict:
    """A schema-2 report. ``image`` / ``text``: the checks that ran (from :func:`read_verdict` or an
    engine's verdict), ``None`` for one that did not; ``safe`` is derived from them, never given."""
    if unsafe_action is not None and unsafe_action not in UNSAFE_ACTIONS:
        raise ValueError(f"unsafe_action must be one of {UNSAFE_ACTIONS}, got {unsafe_action!r}")
    checks = {"image": _check(image, "image"), "text": _check(text, "text")}
    return mark_replaced({
        "schema": SCHEMA,
        "caption": caption,
        "task": task,
        "safe": overall_safe(checks),
        **checks,
        "unsafe_action": unsafe_action,
        "models": {"ben2": None, "florence2": None, "llama_guard": None, "image_guard": None, **(models or {})},
        "devices": {"provider": None, "precision": None, "n_gpu_layers": None, **(devices or {})},
        "seconds": {k: round(float(v), 4) for k, v in (seconds or {}).items()},
        "replaced_text": None,
    })


def mark_replaced(report: dict) -> dict:
    """``report`` with text that cannot be written as UTF-8 (lone surrogates) replaced by U+FFFD,
    and ``replaced_text`` saying where: ``{"caption": ["U+D800"]}``, or None when nothing was.

    make_report and every writer apply it, so the PNG chunk, the sidecar and the command line's
    results say the same; the rest of each string is kept.
    """
    body = {key: value for key, value in report.items() if key != "replaced_text"}
    clean, replaced = encodable(body)
    if not replaced:
        return report  # a report from elsewhere (schema 1, a worker's) is written as it came
    return {**clean, "replaced_text": {**(report.get("replaced_text") or {}), **replaced}}


def _check(check: dict | None, kind: str) -> dict | None:
    if check is None:
        return None
    out = {field: check.get(field) for field in CHECK_FIELDS}
    out["safe"] = check.get("safe") is True
    if kind == "text":
        out["categories"] = [{"code": c["code"], "name": c["name"]} for c in check.get("categories") or []]
    else:
        out["label"] = check.get("label")
    return out


# ----------------------------------------------------------------------------- reading verdicts


def read_verdict(value: Any, *, what: str) -> dict:
    """A check's verdict from another node's JSON report (Safety Check, Image Check), failing closed.

    Safe only when ``safe`` is JSON ``true`` and ``p_unsafe`` a number in 0..1: a string such as
    ``"false"``, a number, a missing field, text that is not JSON, a list — each gives an unsafe check
    whose ``reason`` says what was wrong. ``what`` names the input in those reasons.
    """
    data = value
    if isinstance(value, (str, bytes)):
        try:
            data = json.loads(value)
        except ValueError as exc:
            return _unsafe(f"{what} is not JSON ({exc}): unsafe by default")
    if not isinstance(data, dict):
        return _unsafe(f"{what} is a JSON {type(data).__name__}, not an object: unsafe by default")
    p_unsafe = _probability(data.get("p_unsafe"))
    threshold = _probability(data.get("threshold"))
    categories = _categories(data.get("categories"))
    check = {
        "model": data.get("model") if isinstance(data.get("model"), str) else None,
        "safe": False,
        "p_unsafe": p_unsafe,
        "threshold": threshold,
        "reason": data.get("reason") if isinstance(data.get("reason"), str) else None,
        "categories": categories or [],
        "label": data.get("label") if isinstance(data.get("label"), str) else None,
    }
    safe = data.get("safe")
    problems = []
    if safe is not True and safe is not False:
        problems.append("has no 'safe' field" if "safe" not in data else f"has 'safe': {json.dumps(safe)}, not true or false")
    if p_unsafe is None and safe is not False:  # an unsafe verdict may lack one (blank text is never checked)
        problems.append(f"has 'p_unsafe': {json.dumps(data.get('p_unsafe'))}, not a probability" if "p_unsafe" in data else "has no 'p_unsafe' field")
    if categories is None:
        problems.append("has 'categories' that are not a list of {code, name}")
    if problems:
        check["reason"] = f"{what} " + "; ".join(problems) + ": unsafe by default"
        return check
    check["safe"] = safe is True
    return check


def _unsafe(reason: str) -> dict:
    return {"model": None, "safe": False, "p_unsafe": None, "threshold": None, "reason": reason, "categories": [], "label": None}


def _probability(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        return None
    return float(value)


def _categories(value: Any) -> list[dict] | None:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(c, dict) and isinstance(c.get("code"), str) and isinstance(c.get("name"), str) for c in value
    ):
        return None
    return [{"code": c["code"], "name": c["name"]} for c in value]


def report_safe(report: dict) -> bool | None:
    """A stored report's verdict, as readers must take it: True only for JSON ``true`` backed (schema 2)
    by every check that ran saying ``true``; None when nothing was checked; otherwise False."""
    if report.get("schema") == 1:
        return None if report.get("safe") is None else report.get("safe") is True
    checks = {kind: report.get(kind) for kind in CHECKS}
    derived = overall_safe(checks)
    if derived is None:
        return None if report.get("safe") is None else False
    return derived and report.get("safe") is True


def upgrade(report: dict) -> dict:
    """A schema-1 or schema-2 report in the schema-2 layout (a schema-1 verdict becomes the text check)."""
    if report.get("schema") != 1:
        return {**report, "safe": report_safe(report)}
    checked = report.get("safe") is not None
    text = None
    if checked:
        text = {
            "model": (report.get("models") or {}).get("llama_guard"),
            "safe": report.get("safe") is True,
            "p_unsafe": _probability(report.get("p_unsafe")),
            "threshold": _probability(report.get("threshold")),
            "reason": None,
            "categories": _categories(report.get("categories")) or [],
        }
    return {
        "schema": SCHEMA,
        "caption": report.get("caption"),
        "task": report.get("task"),
        "safe": report_safe(report),
        "image": None,
        "text": text,
        "unsafe_action": report.get("unsafe_action"),
        "models": {"image_guard": None, **(report.get("models") or {})},
        "devices": report.get("devices") or {},
        "seconds": report.get("seconds") or {},
    }


# ----------------------------------------------------------------------------- the PNG


BLUR_MAX_SIDE = 1024  # the unsafe blur is computed at most this many pixels wide and high


def apply_unsafe_action(image: np.ndarray, action: str) -> np.ndarray:
    """``H×W×C`` image (uint8, or float 0..1) as it may be shown when judged unsafe: ``keep`` returns it,
    ``withhold`` and ``blur`` return a new ``uint8`` image (RGBA for withhold and for RGBA input)."""
    if action == "keep":
        return image
    if action == "withhold":
        return np.zeros((*image.shape[:2], 4), dtype=np.uint8)  # untouched zero pages cost no memory until written
    if action == "blur":
        return blur(image)
    raise ValueError(f"unsafe_action must be one of {UNSAFE_ACTIONS}, got {action!r}")


def blur(image: np.ndarray) -> np.ndarray:
    """A near-Gaussian blur hiding the content of an ``H×W×C`` image (uint8, or float 0..1); ``uint8``, same shape.

    Three box blurs a sixteenth of the longer side wide, computed on the image shrunk to at most
    ``BLUR_MAX_SIDE`` pixels a side (a blur that wide loses nothing at that resolution), then
    upscaled bilinearly a band of rows at a time: the working memory is bounded whatever the size.
    A cutout (RGBA) is blurred premultiplied, so the removed background's colours (still stored
    under alpha 0) do not bleed into the visible blur.
    """
    height, width = image.shape[:2]
    scale = min(1.0, BLUR_MAX_SIDE / max(height, width))
    small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
    channels = image.shape[-1]
    small = np.empty((small_h, small_w, channels), np.float32)
    for c in range(channels):
        plane = imageops.as_float(image[..., c])  # one full-size float plane at a time
        if channels == 4 and c < 3:
            plane = plane * imageops.as_float(image[..., 3])
        small[..., c] = imageops.resize_plane(plane, small_w, small_h)
        del plane
    box = max(4, max(small_h, small_w) // 16)  # box width; three passes blur like a Gaussian
    for _ in range(3):
        imageops.box_blur(small, box, out=small)
    if channels == 4:
        coverage = small[..., 3:4]
        hidden = np.broadcast_to(coverage <= 1e-6, small[..., :3].shape)
        np.divide(small[..., :3], coverage, out=small[..., :3], where=~hidden)
        small[..., :3][hidden] = 0.0
        np.clip(small, 0.0, 1.0, out=small)
    return imageops.resize_to_uint8(small, width, height)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float 0..1 image as uint8 (rounded, clipped, NaN as 0), a band of rows at a time."""
    return imageops.to_uint8(image)


def _save_png(target, image: np.ndarray, report: dict, compress_level: int, text: dict[str, str] | None = None) -> None:
    info = PngInfo()
    info.add_itxt(CHUNK, json.dumps(report, ensure_ascii=False), zip=False)
    for key, value in (text or {}).items():  # e.g. the host's graph ("prompt", "workflow"), as tEXt like its own images
        info.add_text(key, value)
    Image.fromarray(to_uint8(image)).save(target, format="PNG", pnginfo=info, compress_level=compress_level)


def encode_png(image: np.ndarray, report: dict, *, compress_level: int = 4) -> bytes:
    """PNG bytes of ``image`` (``H×W×3`` or ``H×W×4``, float 0..1 or uint8) with the report in an iTXt chunk."""
    buffer = io.BytesIO()
    _save_png(buffer, image, mark_replaced(report), compress_level)
    return buffer.getvalue()


def write(png_path: str | Path, image: np.ndarray, report: dict, *, compress_level: int = 4,
          text: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.json`` atomically; return both paths.

    The PNG is encoded straight into its temporary file (no copy of the encoded bytes in memory);
    ``text``: more text chunks for the PNG (key → already serialised value), besides the report's.
    """
    png_path = Path(png_path)
    report = mark_replaced(report)
    _atomic_write(png_path, lambda handle: _save_png(handle, image, report, compress_level, text))
    _write_sidecar(png_path, report)
    return png_path, png_path.with_suffix(".json")


def write_encoded(png_path: str | Path, png: bytes, report: dict) -> tuple[Path, Path]:
    """Write an already encoded report PNG (e.g. a worker's) and its ``.json`` atomically."""
    png_path = Path(png_path)
    report = mark_replaced(report)
    _atomic_write(png_path, lambda handle: handle.write(png))
    _write_sidecar(png_path, report)
    return png_path, png_path.with_suffix(".json")


def _write_sidecar(png_path: Path, report: dict) -> None:
    text = (json.dumps(report, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    _atomic_write(png_path.with_suffix(".json"), lambda handle: handle.write(text))


def _atomic_write(path: Path, fill) -> None:
    """``fill(handle)`` writes the file's content into a temporary file beside ``path``, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            fill(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_png(source: bytes | str | Path) -> dict:
    """The report inside a Cutout Guard PNG (bytes or a path), as stored (schema 1 or 2; see
    :func:`upgrade` and :func:`report_safe`); ValueError when there is none or it cannot be read."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            text = image.text.get(CHUNK)  # type: ignore[attr-defined]
    except Exception as exc:
        raise ValueError(f"not a readable PNG: {exc}") from None
    if text is None:
        raise ValueError(f"the PNG has no '{CHUNK}' text chunk: it was not written by Cutout Guard's Save Cutout Report")
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the PNG's '{CHUNK}' chunk is not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise ValueError(f"the PNG's '{CHUNK}' chunk is a JSON {type(report).__name__}, not a report object")
    if report.get("schema") not in READABLE_SCHEMAS:
        raise ValueError(
            f"unsupported report schema {report.get('schema')!r} (this version reads {', '.join(map(str, READABLE_SCHEMAS))})"
        )
    return report
