"""Node adapter: Save Cutout Report — one PNG per image with its caption and verdicts inside.

The PNG (iTXt chunk ``cutout_guard``, report schema 2) and a ``.json`` sidecar go to ComfyUI's
output folder, and the PNG is listed under ``ui.images``: the RunPod worker returns only images, so
an API caller gets the caption and the verdicts inside the image it receives.

It takes the apply nodes' per-image reports: ``image_report`` (Image Check) and ``safety_report``
(Safety Check) are the verdicts, read failing closed (only JSON ``true`` is safe); ``cutout_report``
and ``caption_report`` (Remove Background, Caption) carry the models, devices and timings. Every
image's report and verdict is decided before the first file is written, so an unreadable verdict
blurs or withholds the image like an unsafe one. The loader inputs (``ben2``, ``florence2``,
``llama_guard``) are deprecated: workflows saved before the per-image reports still load and run,
and only the model names and device settings are taken from them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import host, tensors
from ..core import report, vocab
from ..core.errors import BadInput
from .ben2_nodes import BEN2_TYPE
from .florence2_nodes import FLORENCE2_TYPE
from .llama_guard_nodes import LLAMA_GUARD_TYPE
from .runs import read_run

log = logging.getLogger(__name__)

STAGES = vocab.STAGES  # keys of the report's seconds, in run order


@dataclass
class PerImage:
    """What the inputs say about one image: its caption, the two verdicts and the run data."""

    caption: str | None = None
    image: dict | None = None  # the image check, read failing closed; None when it did not run
    text: dict | None = None  # the caption's check, likewise
    runs: dict[str, dict] = field(default_factory=dict)  # stage -> that node's run data


IMAGES_INPUT = "Save Cutout Report: input 'images'"


def _frames(images) -> list:
    """Every image of every batch in the list, as ``H×W×C`` float arrays (alpha kept; NaN, empty or too large refused)."""
    frames = []
    for batch in images:
        count = tensors.batch_size(batch, IMAGES_INPUT)
        frames += [tensors.frame_array(batch, i) for i in range(count)]
    return frames


def _matched(values, count: int, name: str) -> list:
    values = list(values or [])
    if values and len(values) != count:
        raise BadInput(
            f"Save Cutout Report: {count} images but {len(values)} {name} — connect the {name} made from these images"
        )
    return values


def gather(count: int, *, caption=None, image_report=None, safety_report=None, cutout_report=None, caption_report=None) -> list[PerImage]:
    """One PerImage per image, each input matched by index; verdicts read with ``report.read_verdict``."""
    captions = _matched(caption, count, "captions")
    image_verdicts = _matched(image_report, count, "image reports")
    text_verdicts = _matched(safety_report, count, "safety reports")
    cutouts = _matched(cutout_report, count, "cutout reports")
    captioned = _matched(caption_report, count, "caption reports")
    items = []
    for index in range(count):
        item = PerImage(caption=captions[index] if captions else None)
        if image_verdicts:
            item.image = report.read_verdict(image_verdicts[index], what=f"image report {index}")
            item.runs["image_check"] = read_run(image_verdicts[index], f"image report {index}")
        if text_verdicts:
            item.text = report.read_verdict(text_verdicts[index], what=f"safety report {index}")
            item.runs["safety_check"] = read_run(text_verdicts[index], f"safety report {index}")
        if cutouts:
            item.runs["cutout"] = read_run(cutouts[index], f"cutout report {index}")
        if captioned:
            item.runs["caption"] = read_run(captioned[index], f"caption report {index}")
        items.append(item)
    return items


def legacy_runs(ben2=None, florence2=None, llama_guard=None) -> dict[str, dict]:
    """Model names and device settings from the deprecated loader inputs (no timings: those ride in reports)."""
    runs = {}
    for stage, handle in (("cutout", ben2), ("caption", florence2), ("safety_check", llama_guard)):
        if handle is not None:
            runs[stage] = dict(handle.info)
    if runs:
        log.warning("Save Cutout Report: the ben2/florence2/llama_guard inputs are deprecated — connect the apply "
                    "nodes' 'report' outputs (cutout_report, caption_report, safety_report) instead")
    return runs


def record(item: PerImage, action: str, legacy: dict[str, dict]) -> dict:
    """The schema-2 report of one image."""
    runs = {stage: {**legacy.get(stage, {}), **item.runs.get(stage, {})} for stage in STAGES}
    model = {stage: runs.get(stage, {}).get("model") for stage in STAGES}
    checked = item.image is not None or item.text is not None
    caption_run = runs.get("caption", {})
    return report.make_report(
        caption=item.caption,
        task=caption_run.get("task") if item.caption is not None else None,
        image={**item.image, "model": item.image.get("model") or model["image_check"]} if item.image else None,
        text={**item.text, "model": item.text.get("model") or model["safety_check"]} if item.text else None,
        unsafe_action=action if checked else None,
        models={"ben2": model["cutout"], "florence2": model["caption"], "llama_guard": model["safety_check"],
                "image_guard": model["image_check"]},
        devices={
            "provider": runs.get("cutout", {}).get("provider"),
            "precision": caption_run.get("precision") or runs.get("image_check", {}).get("precision"),
            "n_gpu_layers": runs.get("safety_check", {}).get("n_gpu_layers"),
        },
        seconds={stage: runs[stage]["seconds"] for stage in STAGES if _is_number(runs.get(stage, {}).get("seconds"))},
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(frame, data: dict):
    """The image as it may be published: the unsafe action applies unless every check that ran said safe."""
    return frame if data["safe"] in (True, None) else report.apply_unsafe_action(frame, data["unsafe_action"])


def write_all(frames: list, records: list[dict], prefix: str, text: dict[str, str] | None = None) -> list[dict]:
    """Write each PNG + sidecar (``text``: more PNG text chunks, the graph's); the ``ui.images`` entries."""
    height, width = frames[0].shape[:2]
    folder, stem, counter, subfolder = host.save_path(prefix, width, height)
    saved = []
    for index, (frame, data) in enumerate(zip(frames, records)):
        host.check_interrupt()
        name = f"{stem}_{counter + index:05}_.png"
        report.write(folder / name, shown(frame, data), data, text=text)
        saved.append({"filename": name, "subfolder": subfolder, "type": "output"})
        log.info("Saved %s: %s", name, summary(index, data))
    return saved


class SaveReport:
    """Saves each image as a PNG carrying its caption and safety verdicts, plus a JSON sidecar."""

    DESCRIPTION = (
        "Saves one PNG per image with the caption and the safety verdicts inside (iTXt chunk 'cutout_guard') "
        "and beside it (.json). An image is safe only when every check that ran says so; otherwise it is kept, "
        "blurred or withheld as 'unsafe_action' says."
    )
    CATEGORY = host.CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        deprecated = "Deprecated (kept so older workflows run): only its model name and device settings are recorded. "
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The cutout (RGBA) or the original images; one PNG each. NaN or infinite pixels are an error (never replaced)."}),
                "filename_prefix": ("STRING", {"default": "cutout_guard/report", "tooltip": "File name start in the output folder; may contain a subfolder."}),
                "unsafe_action": (list(vocab.UNSAFE_ACTIONS), {"default": "blur", "tooltip": "What an image judged unsafe becomes: keep it, blur it, or withhold it (a fully transparent image; the report still travels)."}),
            },
            "optional": {
                "caption": ("STRING", {"forceInput": True, "tooltip": "Captions from Caption (Florence-2), one per image."}),
                "safety_report": ("STRING", {"forceInput": True, "tooltip": "The 'report' output of Safety Check, one per image: the caption's verdict."}),
                "ben2": (BEN2_TYPE, {"tooltip": deprecated + "Connect Remove Background's 'report' to cutout_report instead."}),
                "florence2": (FLORENCE2_TYPE, {"tooltip": deprecated + "Connect Caption's 'report' to caption_report instead."}),
                "llama_guard": (LLAMA_GUARD_TYPE, {"tooltip": deprecated + "Safety Check's 'report' (safety_report) already carries it."}),
                "image_report": ("STRING", {"forceInput": True, "tooltip": "The 'report' output of Image Check, one per image: the image's own verdict."}),
                "cutout_report": ("STRING", {"forceInput": True, "tooltip": "The 'report' output of Remove Background: model, provider and timings per image."}),
                "caption_report": ("STRING", {"forceInput": True, "tooltip": "The 'report' output of Caption: model, precision, task and timings per image."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},  # the graph, so the PNG drags back onto the canvas
        }

    def save(self, images, filename_prefix, unsafe_action, caption=None, safety_report=None, ben2=None,
             florence2=None, llama_guard=None, image_report=None, cutout_report=None, caption_report=None,
             prompt=None, extra_pnginfo=None):
        frames = _frames(images)
        items = gather(len(frames), caption=caption, image_report=image_report, safety_report=safety_report,
                       cutout_report=cutout_report, caption_report=caption_report)
        legacy = legacy_runs(*(h[0] if h else None for h in (ben2, florence2, llama_guard)))
        records = [record(item, unsafe_action[0], legacy) for item in items]  # every verdict decided before writing
        graph = host.graph_chunks(prompt[0] if prompt else None, extra_pnginfo[0] if extra_pnginfo else None)
        saved = write_all(frames, records, filename_prefix[0], graph)
        return {"ui": {"images": saved, "text": [summary(i, data) for i, data in enumerate(records)]}}


def _verdict_text(check: dict | None) -> str:
    if check is None:
        return "not checked"
    p = "-" if check.get("p_unsafe") is None else f"{check['p_unsafe']:.2f}"
    return f"{'safe' if check['safe'] else 'UNSAFE'} (p_unsafe {p})"


def summary(index: int, data: dict) -> str:
    """One line for the canvas: the overall verdict, each check's verdict, categories and the caption."""
    if data["safe"] is None:
        overall = "NOT CHECKED"
    else:
        overall = "SAFE" if data["safe"] else f"UNSAFE ({data['unsafe_action']})"
    parts = [f"image {_verdict_text(data['image'])}", f"text {_verdict_text(data['text'])}"]
    text = data["text"] or {}
    if text and not text["safe"]:
        parts.append(", ".join(f"{c['code']} {c['name']}" for c in text.get("categories") or []) or text.get("reason") or "")
    caption = data["caption"] if data["caption"] is not None else "(no caption)"
    return f"[{index}] {overall} — {'; '.join(p for p in parts if p)} — {caption}"
