"""Node adapters for Florence-2: Load Florence-2 and Caption (Florence-2).

Caption takes any IMAGE batch and gives one caption per image, as a ComfyUI list in batch order.
Transparent (RGBA) images, such as a cutout from Remove Background, are composited on a plain
background colour (white by default) before captioning: dropping the alpha channel would show the
model the removed background again (a cutout keeps the original colours under alpha 0), and the
caption should describe the subject that is kept.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from . import host, tensors
from ..core import imageops, vocab
from ..core.imagefile import DEFAULT_MAX_PIXELS
from .handle import load_torch_model
from .runs import run_report

log = logging.getLogger(__name__)

FLORENCE2_TYPE = "CUTOUT_GUARD_FLORENCE2"
KIND = "florence2"
IMAGE_INPUT = "Caption (Florence-2): input 'image'"


class LoadFlorence2:
    """Loads a Florence-2 model (transformers, safetensors) on the CPU or a GPU."""

    DESCRIPTION = (
        "Loads a Florence-2 captioning model. Florence-2-base (467 MB) and Florence-2-large (1.56 GB) "
        "download from florence-community on first use."
    )
    CATEGORY = host.CATEGORY
    RETURN_TYPES = (FLORENCE2_TYPE,)
    RETURN_NAMES = ("florence2",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    host.model_choices(KIND),
                    {
                        "default": host.default_model(KIND),
                        "tooltip": "A model folder in models/florence2. Florence-2-base and Florence-2-large download when missing.",
                    },
                ),
                "precision": (
                    list(vocab.PRECISIONS),
                    {
                        "default": "fp32",
                        "tooltip": "fp32 for the CPU; fp16 (or bf16) on a GPU: half the memory, faster. On the CPU fp16/bf16 run as fp32.",
                    },
                ),
            },
            "optional": {
                "device": (list(vocab.DEVICES), {"default": "default", "tooltip": "default: ComfyUI's device (the GPU unless ComfyUI runs with --cpu). cpu or cuda to force one."}),
                "keep_loaded": host.KEEP_LOADED,
                "threads": host.threads_input("torch's setting, shared with ComfyUI (a number applies to this model's runs only)"),
            },
        }

    def load(self, model, precision, device="default", keep_loaded=True, threads=vocab.DEFAULT_THREADS):
        from ..engines.florence2 import Florence2

        path = host.model_path(KIND, model)
        load = lambda torch_device: Florence2.load(path, precision=precision, device=torch_device, threads=threads or None)  # noqa: E731
        return (load_torch_model("Florence-2", model, precision, device, load, keep_loaded=keep_loaded),)


class Caption:
    """Captions each image of a batch with Florence-2: N images give N captions, in order."""

    DESCRIPTION = (
        "Describes each image with Florence-2. A batch of N images gives a list of N captions in the same "
        "order. Transparent images (a cutout) are captioned on the background colour."
    )
    CATEGORY = host.CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("caption", "report")
    OUTPUT_IS_LIST = (True, True)
    OUTPUT_TOOLTIPS = (
        "One caption per input image, as a list in batch order (the history also shows them as text).",
        "Run data per image (JSON: model, precision, device, task, seconds), for Save Cutout Report's caption_report.",
    )
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "florence2": (FLORENCE2_TYPE, {"tooltip": "From Load Florence-2."}),
                "image": ("IMAGE", {"tooltip": f"Any batch, up to $CUTOUT_GUARD_MAX_PIXELS pixels each ({DEFAULT_MAX_PIXELS // 1_000_000} M by default). RGBA images are composited on 'color' first. NaN or infinite pixels are an error (never replaced)."}),
                "task": (list(vocab.CAPTION_TASKS), {"default": "<CAPTION>", "tooltip": "<CAPTION>: one short sentence. <DETAILED_CAPTION>: a few sentences. <MORE_DETAILED_CAPTION>: a paragraph."}),
                "max_new_tokens": ("INT", {"default": 256, "min": 1, "max": 1023, "tooltip": "Longest caption in tokens (1-1023, what Florence-2's decoder can place); a caption that reaches it is cut off."}),
                "num_beams": ("INT", {"default": 3, "min": 1, "max": 16, "tooltip": "Beam search width (1 = greedy, fastest). Decoding is deterministic: the same image gives the same caption."}),
            },
            "optional": {
                "color": ("STRING", {"default": vocab.DEFAULT_COLOR, "tooltip": "Colour (#RRGGBB) behind transparent pixels of RGBA images; ignored for RGB images."}),
            },
            # the name 'color' had before (API prompts saved then still send it); never shown in the UI
            "hidden": {"background": ("STRING", {"tooltip": "Deprecated: the old name of 'color'."})},
        }

    def run(self, florence2, image, task, max_new_tokens, num_beams, color=None, background=None):
        count = tensors.batch_size(image, IMAGE_INPUT)
        fill = imageops.parse_color(host.renamed(color, background, "Caption (Florence-2)", "background", "color", vocab.DEFAULT_COLOR))
        model = florence2.get()
        progress = host.Progress(count)
        captions: list[str] = []
        reports: list[str] = []
        try:
            for index in range(count):
                host.check_interrupt()
                start = time.perf_counter()
                rgb = tensors.shown_frame(image, index, fill)
                captions.append(model.caption(rgb, task=task, max_new_tokens=max_new_tokens, num_beams=num_beams))
                reports.append(run_report(index, "caption", time.perf_counter() - start, florence2.info, task=task))
                progress.step()
        finally:
            florence2.done()
        return {"ui": {"text": captions}, "result": (captions, reports)}
