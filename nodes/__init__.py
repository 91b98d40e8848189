"""Cutout Guard: BEN2 cutout, Florence-2 caption, Llama Guard text check and an image-level NSFW check for ComfyUI.

Importing this package imports no runtime (onnxruntime, torch, transformers, llama_cpp) and
no ComfyUI module; those load when a node runs.
"""

from __future__ import annotations

from .comfyui import ben2_nodes, florence2_nodes, image_guard_nodes, llama_guard_nodes, report_nodes

NODE_CLASS_MAPPINGS = {
    "CutoutGuardLoadBEN2": ben2_nodes.LoadBEN2,
    "CutoutGuardRemoveBackground": ben2_nodes.RemoveBackground,
    "CutoutGuardLoadFlorence2": florence2_nodes.LoadFlorence2,
    "CutoutGuardCaption": florence2_nodes.Caption,
    "CutoutGuardLoadLlamaGuard": llama_guard_nodes.LoadLlamaGuard,
    "CutoutGuardSafetyCheck": llama_guard_nodes.SafetyCheck,
    "CutoutGuardSaveReport": report_nodes.SaveReport,
    "CutoutGuardLoadImageGuard": image_guard_nodes.LoadImageGuard,
    "CutoutGuardImageCheck": image_guard_nodes.ImageCheck,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CutoutGuardLoadBEN2": "Load BEN2",
    "CutoutGuardRemoveBackground": "Remove Background (BEN2)",
    "CutoutGuardLoadFlorence2": "Load Florence-2",
    "CutoutGuardCaption": "Caption (Florence-2)",
    "CutoutGuardLoadLlamaGuard": "Load Llama Guard",
    "CutoutGuardSafetyCheck": "Safety Check (Llama Guard)",
    "CutoutGuardSaveReport": "Save Cutout Report",
    "CutoutGuardLoadImageGuard": "Load Image Guard",
    "CutoutGuardImageCheck": "Image Check (NSFW)",
}

WEB_DIRECTORY = "./web"  # shows each saved image's verdict and caption on the Save Cutout Report node

__version__ = "0.1.0"
