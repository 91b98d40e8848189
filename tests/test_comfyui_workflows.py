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
WORKFLOWS = ["cutout_caption_safety", "cutout", "caption_safety", "cutout_image_safety"]


def run_saved(comfyui, prompt: dict) -> tuple[dict, bytes, dict]:
    """Run a prompt; (the Save node's outputs, the PNG's bytes, its report — equal to the sidecar)."""
    entry = comfyui.run(prompt, timeout=600)
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "CutoutGuardSaveReport")
    outputs = entry["outputs"][save_id]
    assert len(outputs["images"]) == 1 and len(outputs["text"]) == 1
    saved = outputs["images"][0]
    png_bytes = comfyui.view(saved["filename"], saved["subfolder"])
    data = report.read_png(png_bytes)
    sidecar = json.loads((comfyui.output_dir / saved["subfolder"] / saved["filename"]).with_suffix(".json").read_text())
    assert sidecar == data and data["schema"] == 2
    return outputs, png_bytes, data


@pytest.mark.parametrize("name", WORKFLOWS)
def test_cpu_api_workflow_runs_and_saves_report(comfyui, tiny_models, uploaded, name):
    prompt = with_tiny_models(json.loads((REPO / "workflows_cpu" / f"{name}.api.json").read_text()), uploaded)
    outputs, png_bytes, data = run_saved(comfyui, prompt)
    png = Image.open(io.BytesIO(png_bytes))
    assert png.size == (320, 240)
    cut = name != "caption_safety"
    assert png.mode == ("RGBA" if cut else "RGB")
    if cut:
        alpha = np.asarray(png)[..., 3]
        assert alpha.min() < 50 and alpha.max() > 200, "the cutout should have both subject and background"
        assert data["models"]["ben2"] == TINY["CutoutGuardLoadBEN2"] and data["devices"]["provider"] == "CPU"
        assert "cutout" in data["seconds"]
    image_checked = name != "cutout"
    captioned = name in ("cutout_caption_safety", "caption_safety")
    if image_checked:
        assert data["image"]["model"] == TINY["CutoutGuardLoadImageGuard"] and isinstance(data["image"]["safe"], bool)
        assert 0.0 <= data["image"]["p_unsafe"] <= 1.0 and data["image"]["label"] in ("normal", "nsfw")
        assert data["devices"]["precision"] == "fp32" and "image_check" in data["seconds"]
    else:
        assert data["image"] is None
    if captioned:
        assert isinstance(data["caption"], str) and data["task"] == "<CAPTION>"
        assert isinstance(data["text"]["safe"], bool) and data["devices"]["n_gpu_layers"] == 0
        assert set(data["seconds"]) >= {"caption", "safety_check"}
    else:
        assert data["caption"] is None and data["text"] is None
    checks = [c for c in (data["image"], data["text"]) if c is not None]
    assert data["safe"] == (all(c["safe"] for c in checks) if checks else None)
    print(f"{name}: {png.mode} {png.size} -> {outputs['text'][0]}")


def _textured(path: Path, colour, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour, np.float32) + 0.08 * rng.standard_normal((96, 128, 3)), 0, 1)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("colour, unsafe", [((0.9, 0.05, 0.05), True), ((0.05, 0.05, 0.9), False)], ids=["red", "blue"])
def test_the_rigged_image_guard_blurs_a_red_photo_and_keeps_a_blue_one(comfyui, tiny_models, tmp_path, colour, unsafe):
    """caption_safety on the rigged classifier: both checks in the PNG's report; red → unsafe and blurred."""
    source = _textured(tmp_path / f"{'red' if unsafe else 'blue'}.png", colour, seed=3)
    name = comfyui.upload_image(source)
    prompt = with_tiny_models(json.loads((REPO / "workflows_cpu" / "caption_safety.api.json").read_text()), name)
    outputs, png_bytes, data = run_saved(comfyui, prompt)
    assert data["image"]["safe"] is (not unsafe) and data["image"]["label"] == ("nsfw" if unsafe else "normal")
    assert isinstance(data["text"]["safe"], bool) and data["text"]["model"] == TINY["CutoutGuardLoadLlamaGuard"]
    assert data["caption"], "the tiny captioner wrote text"
    assert data["safe"] is (data["image"]["safe"] and data["text"]["safe"])
    if unsafe:
        assert data["safe"] is False and data["unsafe_action"] == "blur"
    else:
        assert data["safe"] is data["text"]["safe"]
    shown = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB"), np.float32) / 255
    original = np.asarray(Image.open(source).convert("RGB"), np.float32) / 255
    difference = np.abs(shown - original).mean()
    assert (difference > 0.02) if data["safe"] is False else (difference < 0.005), difference
    assert ("UNSAFE" in outputs["text"][0]) is (data["safe"] is False)


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


def test_cutout_caption_safety_runs_with_a_florence2_folder_saved_by_transformers_5(comfyui, tiny_models, uploaded):
    """The image processor inside processor_config.json, no preprocessor_config.json (transformers 5.x)."""
    from devtools.synthetic.florence2 import build_florence2

    name = "tiny_florence2_v5"
    build_florence2(tiny_models / "florence2" / name, layout="transformers5")
    prompt = with_tiny_models(json.loads((REPO / "workflows_cpu" / "cutout_caption_safety.api.json").read_text()), uploaded)
    for node in prompt.values():
        if node["class_type"] == "CutoutGuardLoadFlorence2":
            node["inputs"]["model"] = name
    entry = comfyui.run(prompt, timeout=600)
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "CutoutGuardSaveReport")
    saved = entry["outputs"][save_id]["images"][0]
    data = report.read_png(comfyui.view(saved["filename"], saved["subfolder"]))
    assert data["models"]["florence2"] == name and isinstance(data["caption"], str) and isinstance(data["safe"], bool)


def test_a_result_png_dropped_on_the_canvas_restores_its_workflow(comfyui, tiny_models, uploaded):
    """Drag-back: the report PNG carries the prompt and the frontend's workflow as SaveImage's do,
    and ComfyUI's frontend loads the graph from the PNG file itself (its own file-drop path)."""
    import base64

    from frontend import browser_page

    workflow = json.loads((REPO / "workflows_cpu" / "cutout_caption_safety.json").read_text())
    prompt = with_tiny_models(json.loads((REPO / "workflows_cpu" / "cutout_caption_safety.api.json").read_text()), uploaded)
    entry = comfyui.run(prompt, timeout=600, extra_data={"extra_pnginfo": {"workflow": workflow}})
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "CutoutGuardSaveReport")
    saved = entry["outputs"][save_id]["images"][0]
    png_bytes = comfyui.view(saved["filename"], saved["subfolder"])
    with Image.open(io.BytesIO(png_bytes)) as image:
        image.load()
        carried = json.loads(image.text["prompt"])  # as ComfyUI ran it (it adds its own keys, e.g. is_changed)
        assert {k: (v["class_type"], v["inputs"]) for k, v in carried.items()} == {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()}
        assert json.loads(image.text["workflow"]) == workflow
    assert report.read_png(png_bytes)["schema"] == 2

    with browser_page(comfyui) as (page, errors):
        loaded = page.evaluate(
            """async (data) => {
                window.app.graph.clear();
                const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                await window.app.handleFile(new File([bytes], "result.png", { type: "image/png" }));
                for (let i = 0; i < 100 && window.app.graph._nodes.length === 0; i++) await new Promise(r => setTimeout(r, 100));
                return window.app.graph._nodes.map(n => n.type).sort();
            }""",
            base64.b64encode(png_bytes).decode(),
        )
    assert loaded == sorted(node["type"] for node in workflow["nodes"])
    assert not errors, errors
