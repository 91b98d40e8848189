"""What one routed request gives back: the cutout PNG and the report inside it, plus where and
how it ran (endpoint, reason, timings, cost estimate)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from ..core.report import read_png, upgrade
from .errors import MalformedOutput


@dataclass(frozen=True)
class Category:
    code: str   # Llama Guard code, e.g. "S1"
    name: str   # e.g. "Violent Crimes"


@dataclass(frozen=True)
class Timings:
    wall_s: float                       # submit to result, measured here (every attempt included)
    queue_s: float | None = None        # RunPod's delayTime: queue + cold start
    execution_s: float | None = None    # RunPod's executionTime: the worker's run
    stages: Mapping[str, float] = field(default_factory=dict)  # the report's per-stage seconds


@dataclass(frozen=True)
class Result:
    png: bytes                          # the cutout PNG as the worker saved it (report inside)
    report: dict                        # the report in the schema-2 layout (a schema-1 one upgraded; core/report.py)
    endpoint: str                       # "cpu" or "gpu": the endpoint that served it
    endpoint_id: str
    reason: str                         # why that endpoint, in words
    route: tuple[str, ...]              # every routing step (rule, overflow, fallback)
    job_id: str
    filename: str                       # the image's name in the worker's output
    timings: Timings
    cost_usd: float | None = None       # billed seconds × the endpoint's price_per_second
    cost_basis: str | None = None       # what the seconds are: see client.billed_seconds
    warnings: tuple[str, ...] = ()      # the worker's non-fatal ``errors``

    @property
    def caption(self) -> str | None:
        return self.report.get("caption")

    @property
    def safe(self) -> bool | None:
        """True only when the report says JSON true and every check that ran agrees; None when none ran."""
        return self.report.get("safe")

    @property
    def verdict(self) -> str | None:
        """``"safe"``, ``"unsafe"``, or None when no safety check ran."""
        return verdict_of(self.report)

    @property
    def image_check(self) -> dict | None:
        """The image-level check (model, safe, p_unsafe, threshold, reason, label), or None when it did not run."""
        return self.report.get("image")

    @property
    def text_check(self) -> dict | None:
        """The caption's check (model, safe, p_unsafe, threshold, reason, categories), or None when it did not run."""
        return self.report.get("text")

    @property
    def categories(self) -> tuple[Category, ...]:
        """The text check's violated categories."""
        return tuple(Category(c["code"], c["name"]) for c in ((self.text_check or {}).get("categories") or ()))

    @property
    def p_unsafe(self) -> float | None:
        """The text check's p_unsafe (the image check's is ``image_check["p_unsafe"]``)."""
        return (self.text_check or {}).get("p_unsafe")

    def summary(self) -> dict[str, Any]:
        """Everything but the PNG bytes, JSON-ready."""
        return {
            "endpoint": self.endpoint,
            "endpoint_id": self.endpoint_id,
            "reason": self.reason,
            "route": list(self.route),
            "job_id": self.job_id,
            "filename": self.filename,
            "caption": self.caption,
            "verdict": self.verdict,
            "image": self.image_check,
            "text": self.text_check,
            "categories": [{"code": c.code, "name": c.name} for c in self.categories],
            "p_unsafe": self.p_unsafe,
            "timings": {
                "wall_s": round(self.timings.wall_s, 3),
                "queue_s": self.timings.queue_s,
                "execution_s": self.timings.execution_s,
                "stages": dict(self.timings.stages),
            },
            "cost_usd": self.cost_usd,
            "cost_basis": self.cost_basis,
            "warnings": list(self.warnings),
        }


def verdict_of(report: Mapping) -> str | None:
    """``"safe"``, ``"unsafe"``, or None when no safety check ran, for a report as ``report_image``
    returns it (its ``safe`` re-derived from the checks: only JSON true backed by every check)."""
    safe = report.get("safe")
    return None if safe is None else ("safe" if safe is True else "unsafe")


@dataclass(frozen=True)
class ReportImage:
    filename: str
    png: bytes
    report: dict
    warnings: tuple[str, ...]


def report_image(
    output: Any,
    *,
    endpoint: str | None = None,
    job_id: str | None = None,
    fetch: Callable[[str], bytes] | None = None,
) -> ReportImage:
    """The one report PNG in a worker-comfyui output ``{"images": [{filename, type, data}], "errors"?}``.

    ``type`` is ``base64`` (data = the file) or ``s3_url`` (data = an http(s) URL, read with ``fetch``;
    anything else there is the worker's bucket settings at fault, a MalformedOutput that says so).
    Images without a Cutout Guard report are ignored; none or several is MalformedOutput.
    """

    def malformed(message: str) -> MalformedOutput:
        where = f"{endpoint} endpoint, job {job_id}" if endpoint else f"job {job_id}"
        return MalformedOutput(f"{where}: {message}", endpoint=endpoint, job_id=job_id)

    if not isinstance(output, Mapping):
        raise malformed(f"output is {type(output).__name__}, not worker-comfyui's {{'images': [...]}}")
    warnings = output.get("errors") or []
    if not isinstance(warnings, list):
        warnings = [str(warnings)]
    warnings = tuple(str(w) for w in warnings)
    images = output.get("images")
    if not isinstance(images, list):
        raise malformed("output has no 'images' list — is the endpoint running worker-comfyui?")
    found: list[ReportImage] = []
    skipped: list[str] = []
    for index, item in enumerate(images):
        if not isinstance(item, Mapping) or not isinstance(item.get("data"), str):
            raise malformed(f"images[{index}] is not {{filename, type, data}}")
        filename = str(item.get("filename") or f"images[{index}]")
        kind = item.get("type", "base64")
        if kind == "base64":
            data = _b64(item["data"])
            if data is None:
                raise malformed(f"{filename}: data is not valid base64")
        elif kind == "s3_url":
            if not _is_http_url(item["data"]):
                raise malformed(
                    f"{filename} came back as s3_url {item['data'][:200]!r}, which is not an http(s) URL: the "
                    "worker's bucket upload did not happen (worker-comfyui with BUCKET_ENDPOINT_URL set but no "
                    "BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY keeps the file on the worker's own disk) — "
                    "set both keys in the endpoint's environment, or remove BUCKET_ENDPOINT_URL to get the "
                    "image back inline (base64)")
            if fetch is None:
                raise malformed(f"{filename} is an S3 URL and no way to fetch it was given")
            data = fetch(item["data"])
        else:
            raise malformed(f"{filename}: unknown image type {kind!r} (expected 'base64' or 's3_url')")
        try:
            report = upgrade(read_png(data))  # schema 1 or 2; the verdict re-derived, only JSON true is safe
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            skipped.append(f"{filename} ({exc})")
            continue
        found.append(ReportImage(filename, data, report, warnings))
    if not found:
        detail = "; ".join(skipped) if skipped else "the output has no images"
        if warnings:
            detail += "; worker errors: " + " | ".join(warnings)
        raise malformed(f"no Cutout Guard report image in the output: {detail} — does the workflow end with "
                        "the Save Cutout Report node?")
    if len(found) > 1:
        raise malformed(f"expected one report image for one input image, got {len(found)}: "
                        + ", ".join(f.filename for f in found))
    return found[0]


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _b64(text: str) -> bytes | None:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
