"""Node adapters for BEN2: Load BEN2 and Remove Background (BEN2)."""

from __future__ import annotations

import logging
import time

import numpy as np

from . import host, tensors
from ..core import imageops, vocab
from ..core.imagefile import DEFAULT_MAX_PIXELS
from .handle import ModelHandle
from .runs import run_report

log = logging.getLogger(__name__)

BEN2_TYPE = "CUTOUT_GUARD_BEN2"
KIND = "ben2"
IMAGE_INPUT = "Remove Background (BEN2): input 'image'"


class LoadBEN2:
    """Loads a BEN2 ONNX model on the CPU or a CUDA GPU."""

    DESCRIPTION = "Loads a BEN2 background-removal model (ONNX). The default model downloads on first use (223 MB)."
    CATEGORY = host.CATEGORY
    RETURN_TYPES = (BEN2_TYPE,)
    RETURN_NAMES = ("ben2",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    host.model_choices(KIND),
                    {"default": host.default_model(KIND), "tooltip": "ONNX file in models/ben2. BEN2_Base.onnx downloads from PramaLLC/BEN2 when missing."},
                ),
                "provider": (list(vocab.PROVIDERS), {"default": "CPU", "tooltip": "CPU: onnxruntime on the processor. CUDA: an NVIDIA GPU (needs onnxruntime-gpu)."}),
            },
            "optional": {
                "keep_loaded": host.KEEP_LOADED,
                "threads": host.threads_input("the CPUs this process may use (container quota aware)"),
            },
        }

    def load(self, model, provider, keep_loaded=True, threads=vocab.DEFAULT_THREADS):
        from ..engines.ben2 import Ben2

        path = host.model_path(KIND, model)
        handle = ModelHandle(
            f"BEN2 {model} ({provider})",
            lambda: Ben2.load(path, provider=provider, threads=threads or None),
            keep_loaded=keep_loaded,
            info={"model": model, "provider": provider},
        )
        handle.get()  # load now, so a bad file or provider is reported on this node
        handle.done()
        return (handle,)


class RemoveBackground:
    """Cuts the subject out of each image of a batch with BEN2."""

    DESCRIPTION = "Removes the background with BEN2: a transparent cutout (or one on a colour) and the subject mask."
    CATEGORY = host.CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("cutout", "mask", "report")
    OUTPUT_IS_LIST = (False, False, True)
    OUTPUT_TOOLTIPS = (
        "Transparent: RGBA images (SaveImage writes a transparent PNG). Color: RGB on the chosen colour.",
        "Subject mask [B,H,W]: 1.0 = subject, 0.0 = background (the inverse of LoadImage's mask).",
        "Run data per image (JSON: model, provider, seconds), for Save Cutout Report's cutout_report.",
    )
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ben2": (BEN2_TYPE, {"tooltip": "From Load BEN2."}),
                "image": ("IMAGE", {"tooltip": f"Any batch, up to $CUTOUT_GUARD_MAX_PIXELS pixels each ({DEFAULT_MAX_PIXELS // 1_000_000} M by default); RGBA inputs use their colour channels. NaN or infinite pixels are an error (never replaced)."}),
                "background": (list(vocab.BACKGROUNDS), {"default": "transparent", "tooltip": "transparent: RGBA output. color: composite on 'color'."}),
                "color": ("STRING", {"default": vocab.DEFAULT_COLOR, "tooltip": "Background colour as #RRGGBB, used when background is 'color'."}),
                "refine_foreground": ("BOOLEAN", {"default": False, "tooltip": "Remove the old background's colour from soft edges (hair, fur). Slower."}),
                "mask_values": (list(vocab.MASK_VALUES), {"default": "normalized", "tooltip": "normalized: stretched to 0..1 as BEN2's own runner does. raw: the model's probabilities."}),
            },
        }

    def run(self, ben2, image, background, color, refine_foreground, mask_values):
        count = tensors.batch_size(image, IMAGE_INPUT)
        fill = imageops.parse_color(color) if background == "color" else None
        model = ben2.get()
        progress = host.Progress(count)
        height, width = image.shape[1:3]
        cutouts = np.empty((count, height, width, 3 if fill is not None else 4), np.float32)
        alphas = np.empty((count, height, width), np.float32)
        reports = []
        try:
            for index in range(count):
                host.check_interrupt()
                start = time.perf_counter()
                rgb = tensors.colour_view(image, index)  # no copy: the cutout below clips into its own output
                alpha = model.matte(rgb, mask_values=mask_values)
                if refine_foreground:
                    rgb = imageops.estimate_foreground(np.clip(rgb, 0.0, 1.0), alpha)
                imageops.cutout(rgb, alpha, color=fill, out=cutouts[index])
                alphas[index] = alpha
                reports.append(run_report(index, "cutout", time.perf_counter() - start, ben2.info))
                progress.step()
        finally:
            ben2.done()
        return (tensors.to_image(cutouts), tensors.to_mask(alphas), reports)
