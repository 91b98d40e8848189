"""BEN2 in a real ComfyUI: the pack loads, and LoadImage → Load BEN2 → Remove Background → SaveImage runs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from devtools.synthetic.ben2 import build_ben2

pytestmark = pytest.mark.comfyui


def test_pack_loads_without_import_errors(comfyui):
    info = comfyui.object_info()
    assert "CutoutGuardLoadBEN2" in info and "CutoutGuardRemoveBackground" in info, comfyui.log()[-3000:]
    timing = [line for line in comfyui.log().splitlines() if line.rstrip().endswith("custom_nodes/cutout-guard")]
    assert timing and not any("IMPORT FAILED" in line for line in timing), comfyui.log()[-3000:]
    load = info["CutoutGuardLoadBEN2"]["input"]["required"]
    assert load["provider"][0] == ["CPU", "CUDA"]


def test_cutout_prompt_saves_an_rgba_png(comfyui, tmp_path):
    build_ben2(comfyui.models_root / "ben2" / "tiny_ben2.onnx", size=64)
    pixels = np.zeros((96, 128, 3), np.uint8)
    pixels[:, :64] = (0, 0, 255)  # the tiny model scores blue as subject
    pixels[:, 64:] = (255, 0, 0)  # and red as background
    source = tmp_path / "photo.png"
    Image.fromarray(pixels).save(source)
    name = comfyui.upload_image(source)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "CutoutGuardLoadBEN2", "inputs": {"model": "tiny_ben2.onnx", "provider": "CPU", "keep_loaded": True}},
        "3": {"class_type": "CutoutGuardRemoveBackground", "inputs": {
            "ben2": ["2", 0], "image": ["1", 0], "background": "transparent", "color": "#FFFFFF",
            "refine_foreground": True, "mask_values": "normalized"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "cutout_test"}},
    }
    entry = comfyui.run(prompt)
    images = entry["outputs"]["4"]["images"]
    assert len(images) == 1
    png = Image.open(io.BytesIO(comfyui.view(images[0]["filename"], images[0]["subfolder"])))
    assert png.mode == "RGBA" and png.size == (128, 96)
    alpha = np.asarray(png)[..., 3]
    assert alpha[:, :50].mean() > 200 and alpha[:, 80:].mean() < 50  # subject opaque, background clear
    print(f"ComfyUI saved {images[0]['filename']}: {png.mode} {png.size}, alpha left {alpha[:, :50].mean():.0f} right {alpha[:, 80:].mean():.0f}")
