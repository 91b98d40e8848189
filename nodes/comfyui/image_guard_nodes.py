"""Node adapters for the image-level safety check: Load Image Guard and Image Check.

Image Check judges each image of a batch itself (not its caption) with an NSFW image classifier
(default Falconsai/nsfw_image_detection). Transparent (RGBA) images — a cutout from Remove
Background — are checked as they are shown: composited on the same colour the Caption node uses
(``color``, white by default), so the check sees what gets published. It is an output node: it runs
even when nothing consumes its outputs, and its reports appear in the UI and the prompt's history.
"""

from __future__ import annotations

import logging
import time

from . import host, tensors
from ..core import imageops, vocab
from ..core.errors import BadInput
from ..core.models import get_kind
from .handle import load_torch_model
from .runs import run_report

log = logging.getLogger(__name__)

IMAGE_GUARD_TYPE = "CUTOUT_GUARD_IMAGE_GUARD"
KIND = "image_guard"


class LoadImageGuard:
    """Loads an NSFW image classifier (transformers, safetensors) on the CPU or a GPU."""

    DESCRIPTION = (
        "Loads the image-level safety classifier. The default, Falconsai/nsfw_image_detection (ViT-B/16, "
        "labels normal/nsfw, Apache-2.0, 343 MB), downloads into models/image_guard on first use."
    )
    CATEGORY = host.CATEGORY
    RETURN_TYPES = (IMAGE_GUARD_TYPE,)
    RETURN_NAMES = ("image_guard",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        default = get_kind(KIND).defaults[0]
        return {
            "required": {
                "model": (
                    host.model_choices(KIND),
                    {"default": default.name, "tooltip": f"A model folder in models/image_guard. {default.name} downloads from {default.repo_id} when missing."},
                ),
                "precision": (
                    list(vocab.PRECISIONS),
                    {"default": "fp32", "tooltip": "fp32 for the CPU; fp16 on a GPU (half the memory). On the CPU fp16/bf16 run as fp32."},
                ),
            },
            "optional": {
                "device": (list(vocab.DEVICES), {"default": "default", "tooltip": "default: ComfyUI's device (the GPU unless ComfyUI runs with --cpu). cpu or cuda to force one."}),
                "keep_loaded": host.KEEP_LOADED,
                "threads": host.threads_input("torch's setting, shared with ComfyUI (a number applies to this model's runs only)"),
            },
        }

    def load(self, model, precision, device="default", keep_loaded=True, threads=vocab.DEFAULT_THREADS):
        from ..engines.image_guard import ImageGuard

        path = host.model_path(KIND, model)
        load = lambda torch_device: ImageGuard.load(path, precision=precision, device=torch_device, threads=threads or None)  # noqa: E731
        return (load_torch_model("Image guard", model, precision, device, load, keep_loaded=keep_loaded),)


class ImageCheck:
    """Checks each image of a batch with the image guard: N images give N verdicts, in order."""

    DESCRIPTION = (
        "Judges each image itself with an NSFW image classifier: unsafe when the model's probability of its "
        "unsafe label reaches the threshold. Transparent images (a cutout) are judged on the colour behind them (color)."
    )
    CATEGORY = host.CATEGORY
    OUTPUT_NODE = True  # always runs, and shows each verdict in the UI and in the prompt's history
    RETURN_TYPES = ("BOOLEAN", "FLOAT", "STRING")
    RETURN_NAMES = ("safe", "p_unsafe", "report")
    OUTPUT_IS_LIST = (True, True, True)
    OUTPUT_TOOLTIPS = (
        "True when the image is judged safe (one per image).",
        "The model's probability of its unsafe label ('nsfw'), 0..1.",
        "JSON per image: safe, p_unsafe, threshold, label, reason, model, precision, device, seconds — "
        "for Save Cutout Report's image_report.",
    )
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image_guard": (IMAGE_GUARD_TYPE, {"tooltip": "From Load Image Guard."}),
                "image": ("IMAGE", {"tooltip": "Any size and batch. RGBA images are composited on 'color' first."}),
                "threshold": (
                    "FLOAT",
                    {
                        "default": vocab.DEFAULT_THRESHOLD,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Unsafe when P(unsafe label) >= threshold. 0.5: the unsafe label is at least as likely as "
                        "all others together. Lower = stricter.",
                    },
                ),
            },
            "optional": {
                "color": ("STRING", {"default": vocab.DEFAULT_COLOR, "tooltip": "Colour (#RRGGBB) behind transparent pixels of RGBA images, as Caption uses; ignored for RGB images."}),
            },
        }

    def run(self, image_guard, image, threshold, color=vocab.DEFAULT_COLOR):
        count = tensors.batch_size(image)
        try:
            fill = imageops.parse_color(color)
        except BadInput:
            raise BadInput(f"color {color!r} is not a colour like #FFFFFF — fix the 'color' input of Image Check") from None
        model = image_guard.get()
        progress = host.Progress(count)
        safe_out, p_out, reports = [], [], []
        try:
            for index in range(count):
                host.check_interrupt()
                start = time.perf_counter()
                verdict = model.check(tensors.shown_frame(image, index, fill), threshold=float(threshold))
                reports.append(run_report(index, "image_check", time.perf_counter() - start, image_guard.info, **verdict.to_dict()))
                safe_out.append(bool(verdict.safe))
                p_out.append(1.0 if verdict.p_unsafe is None else float(verdict.p_unsafe))
                log.info("Image guard [%d]: %s (%s)", index, "safe" if verdict.safe else "UNSAFE", verdict.reason)
                progress.step()
        finally:
            image_guard.done()
        return {"ui": {"text": reports}, "result": (safe_out, p_out, reports)}
