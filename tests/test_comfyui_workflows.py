"""The shipped workflows in a real ComfyUI: each CPU API workflow runs on tiny models, and each UI
workflow loads in ComfyUI's own frontend (headless Chromium) and converts to the same API prompt."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_harness import TINY, with_tiny_models
from cutout_guard.core import report

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["cutout_caption_safety", "cutout", "caption_safety"])
def test_cpu_api_workflow_runs_and_saves_report(comfyui, tiny_models, uploaded, name):
    prompt = with_tiny_models(json.loads((REPO / "workflows_cpu" / f"{name}.api.json").read_text()), uploaded)
    entry = comfyui.run(prompt, timeout=600)
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "CutoutGuardSaveReport")
    outputs = entry["outputs"][save_id]
    assert len(outputs["images"]) == 1 and len(outputs["text"]) == 1
    saved = outputs["images"][0]
    png_bytes = comfyui.view(saved["filename"], saved["subfolder"])
    png = Image.open(io.BytesIO(png_bytes))
    data = report.read_png(png_bytes)
    sidecar = json.loads((comfyui.output_dir / saved["subfolder"] / saved["filename"]).with_suffix(".json").read_text())
    assert sidecar == data
    assert png.size == (320, 240)
    cut = name != "caption_safety"
    assert png.mode == ("RGBA" if cut else "RGB")
    if cut:
        alpha = np.asarray(png)[..., 3]
        assert alpha.min() < 50 and alpha.max() > 200, "the cutout should have both subject and background"
        assert data["models"]["ben2"] == TINY["CutoutGuardLoadBEN2"] and data["devices"]["provider"] == "CPU"
    if name == "cutout":
        assert data["caption"] is None and data["safe"] is None
    else:
        assert isinstance(data["caption"], str) and data["task"] == "<CAPTION>"
        assert isinstance(data["safe"], bool) and 0.0 <= data["p_unsafe"] <= 1.0
        assert data["devices"]["precision"] == "fp32" and data["devices"]["n_gpu_layers"] == 0
        assert set(data["seconds"]) >= {"caption", "safety_check"}
    print(f"{name}: {saved['filename']} {png.mode} {png.size} -> {outputs['text'][0]}")


def test_ui_workflows_load_in_the_frontend_and_match_the_api_files(comfyui):
    from frontend import api_inputs, browser_page, load_and_convert

    with browser_page(comfyui) as (page, errors):
        for path in sorted(REPO.glob("workflows_*/*.json")) + sorted(REPO.glob("example_workflows/*.json")):
            if path.name.endswith(".api.json"):
                continue
            workflow = json.loads(path.read_text())
            converted = load_and_convert(page, workflow)
            assert not converted["missing"], f"{path.name}: nodes the frontend could not create: {converted['missing']}"
            assert converted["count"] == len(workflow["nodes"])
            api_path = path.with_name(path.stem + ".api.json") if path.parent.name != "example_workflows" else REPO / "workflows_cpu" / (path.stem + ".api.json")
            want = api_inputs(json.loads(api_path.read_text()))
            assert converted["prompt"] == want, f"{path.relative_to(REPO)}: the frontend's prompt differs from {api_path.name}"
            print(f"frontend loaded {path.relative_to(REPO)}: {converted['count']} nodes, prompt == {api_path.name}")
    assert not [e for e in errors if "cutout" in e.lower()], errors
