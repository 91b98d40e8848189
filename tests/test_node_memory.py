"""The nodes' memory contract on a large frame: besides the IMAGE tensors (float32 by ComfyUI's
contract) they take and return, a node adds at most two full-size float32 RGB copies at any time.

Measured with tracemalloc, which sees numpy's allocations (Pillow's own buffers are not traced);
the input tensor exists before tracing starts, the outputs are subtracted from the traced peak.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

from cutout_guard.comfyui import ben2_nodes
from cutout_guard.comfyui.report_nodes import SaveReport
from devtools.synthetic.ben2 import build_ben2

HEIGHT, WIDTH = 1200, 1500  # 1.8 M pixels: one float32 RGB copy is 21.6 MB
COPY = HEIGHT * WIDTH * 3 * 4
# the blur's fixed working image (at most BLUR_MAX_SIDE² RGBA float32, 16.8 MB) is small only next to
# a large frame: the save test uses one of 7.2 M pixels
BIG_HEIGHT, BIG_WIDTH = 2400, 3000
BIG_COPY = BIG_HEIGHT * BIG_WIDTH * 3 * 4


@pytest.fixture
def output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTOUT_GUARD_OUTPUT_DIR", str(tmp_path / "output"))
    return tmp_path / "output"


def traced_peak(run):
    """(result, peak bytes numpy allocated while ``run()`` ran)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("background", ["transparent", "color"])
def test_remove_background_adds_at_most_two_float_copies(models_dir, background):
    build_ben2(models_dir / "ben2" / "tiny.onnx", size=64)
    handle = ben2_nodes.LoadBEN2().load("tiny.onnx", "CPU", True)[0]
    image = torch.rand(1, HEIGHT, WIDTH, 3)
    (cutout, mask, _), peak = traced_peak(
        lambda: ben2_nodes.RemoveBackground().run(handle, image, background, "#FFFFFF", False, "normalized"))
    outputs = cutout.numel() * 4 + mask.numel() * 4
    assert peak - outputs <= 2 * COPY, f"{(peak - outputs) / COPY:.2f} copies beyond the outputs"


@pytest.mark.parametrize("action", ["blur", "withhold", "keep"])
def test_save_report_adds_at_most_two_float_copies(output_dir, action):
    image = torch.rand(1, BIG_HEIGHT, BIG_WIDTH, 4)
    unsafe = json.dumps({"safe": False, "p_unsafe": 0.9, "threshold": 0.5, "categories": []})
    result, peak = traced_peak(lambda: SaveReport().save([image], ["memory/report"], [action], caption=["a cat"], safety_report=[unsafe]))
    assert result["ui"]["images"]
    assert peak <= 2 * BIG_COPY, f"{peak / BIG_COPY:.2f} float copies while saving with {action}"
