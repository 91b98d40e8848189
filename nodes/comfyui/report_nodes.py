"""Node adapter: Save Cutout Report — one PNG per image with its caption and verdict inside.

The PNG (iTXt chunk ``cutout_guard``) and a ``.json`` sidecar go to ComfyUI's output folder, and
the PNG is listed under ``ui.images``: the RunPod worker returns only images, so an API caller gets
the caption and the verdict inside the image it receives.
"""

from __future__ import annotations

import json
import logging

from . import host, tensors
from ..core import report
from .ben2_nodes import BEN2_TYPE
from ..core.errors import BadInput
from .florence2_nodes import FLORENCE2_TYPE
from .llama_guard_nodes import LLAMA_GUARD_TYPE

log = logging.getLogger(__name__)


def _frames(images) -> list:
    """Every image of every batch in the list, as ``H×W×C`` float arrays (alpha kept)."""
    frames = []
    for batch in images:
        tensors.batch_size(batch)
        frames += [batch[i].detach().to("cpu").float().numpy() for i in range(batch.shape[0])]
    return frames


def _matched(values, count: int, name: str) -> list:
    values = list(values or [])
    if values and len(values) != count:
        raise BadInput(
            f"Save Cutout Report: {count} images but {len(values)} {name} — connect the {name} made from these images"
        )
    return values


def _seconds(handle, index: int) -> float | None:
    """Image ``index``'s seconds in the handle's last run, when the stage ran."""
    values = (handle.last_run.get("seconds") if handle is not None else None) or []
    return values[index] if index < len(values) else None


class SaveReport:
    """Saves each image as a PNG carrying its caption and safety verdict, plus a JSON sidecar."""

    DESCRIPTION = (
        "Saves one PNG per image with the caption and the safety verdict inside (iTXt chunk 'cutout_guard') "
        "and beside it (.json). Images judged unsafe are kept, blurred or withheld as 'unsafe_action' says."
    )
    CATEGORY = host.CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The cutout (RGBA) or the original images; one PNG each."}),
                "filename_prefix": ("STRING", {"default": "cutout_guard/report", "tooltip": "File name start in the output folder; may contain a subfolder."}),
                "unsafe_action": (list(report.UNSAFE_ACTIONS), {"default": "blur", "tooltip": "What an image judged unsafe becomes: keep it, blur it, or withhold it (a fully transparent image; the report still travels)."}),
            },
            "optional": {
                "caption": ("STRING", {"forceInput": True, "tooltip": "Captions from Caption (Florence-2), one per image."}),
                "safety_report": ("STRING", {"forceInput": True, "tooltip": "The 'report' output of Safety Check, one per image."}),
                "ben2": (BEN2_TYPE, {"tooltip": "Load BEN2's output, to record the model, provider and timings."}),
                "florence2": (FLORENCE2_TYPE, {"tooltip": "Load Florence-2's output, to record the model, precision, task and timings."}),
                "llama_guard": (LLAMA_GUARD_TYPE, {"tooltip": "Load Llama Guard's output, to record the model, n_gpu_layers and timings."}),
            },
        }

    def save(self, images, filename_prefix, unsafe_action, caption=None, safety_report=None, ben2=None, florence2=None, llama_guard=None):
        frames = _frames(images)
        count = len(frames)
        captions = _matched(caption, count, "captions")
        verdicts = [json.loads(text) for text in _matched(safety_report, count, "safety reports")]
        prefix, action = filename_prefix[0], unsafe_action[0]
        ben2, florence2, llama_guard = (h[0] if h else None for h in (ben2, florence2, llama_guard))

        height, width = frames[0].shape[:2]
        folder, stem, counter, subfolder = host.save_path(prefix, width, height)
        saved, lines = [], []
        for index, frame in enumerate(frames):
            host.check_interrupt()
            verdict = verdicts[index] if verdicts else None
            unsafe = verdict is not None and not verdict.get("safe", False)
            shown = report.apply_unsafe_action(frame, action) if unsafe else frame
            seconds = {
                "cutout": _seconds(ben2, index),
                "caption": _seconds(florence2, index),
                "safety_check": _seconds(llama_guard, index),
            }
            data = report.make_report(
                caption=captions[index] if captions else None,
                task=florence2.last_run.get("task") if florence2 is not None and captions else None,
                safe=None if verdict is None else bool(verdict.get("safe")),
                p_unsafe=None if verdict is None else verdict.get("p_unsafe"),
                categories=None if verdict is None else verdict.get("categories", []),
                threshold=None if verdict is None else verdict.get("threshold"),
                unsafe_action=None if verdict is None else action,
                models={
                    "ben2": ben2.info.get("model") if ben2 is not None else None,
                    "florence2": florence2.info.get("model") if florence2 is not None else None,
                    "llama_guard": (llama_guard.info.get("model") if llama_guard is not None else None)
                    or (verdict or {}).get("model"),
                },
                devices={
                    "provider": ben2.info.get("provider") if ben2 is not None else None,
                    "precision": florence2.info.get("precision") if florence2 is not None else None,
                    "n_gpu_layers": llama_guard.info.get("n_gpu_layers")
                    if llama_guard is not None else (verdict or {}).get("n_gpu_layers"),
                },
                seconds={k: v for k, v in seconds.items() if v is not None},
            )
            name = f"{stem}_{counter + index:05}_.png"
            report.write(folder / name, shown, data)
            saved.append({"filename": name, "subfolder": subfolder, "type": "output"})
            lines.append(_summary(index, data))
            log.info("Saved %s: %s", name, lines[-1])
        return {"ui": {"images": saved, "text": lines}}


def _summary(index: int, data: dict) -> str:
    """One line for the canvas: the verdict, p_unsafe, categories and the caption."""
    if data["safe"] is None:
        verdict = "not checked"
    elif data["safe"]:
        verdict = f"SAFE (p_unsafe {data['p_unsafe']:.2f})"
    else:
        codes = ", ".join(f"{c['code']} {c['name']}" for c in data["categories"]) or "unparsed answer"
        verdict = f"UNSAFE (p_unsafe {data['p_unsafe'] if data['p_unsafe'] is not None else float('nan'):.2f}; {codes}; {data['unsafe_action']})"
    caption = data["caption"] if data["caption"] is not None else "(no caption)"
    return f"[{index}] {verdict} — {caption}"
