"""The shipped workflows in a real ComfyUI: each CPU API workflow runs on tiny models, and each UI
workflow loads in ComfyUI's own frontend (headless Chromium) and converts to the same API prompt."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_guard.core import report
from devtools.synthetic.ben2 import build_ben2
from photo import make_photo

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parent.parent
TINY = {"CutoutGuardLoadBEN2": "tiny_ben2.onnx", "CutoutGuardLoadFlorence2": "tiny_florence2", "CutoutGuardLoadLlamaGuard": "tiny_guard.gguf"}


@pytest.fixture(scope="module")
def tiny_models(comfyui):
    from devtools.synthetic.florence2 import build_florence2
    from devtools.synthetic.llama_guard import build_llama_guard

    root = comfyui.models_root
    build_ben2(root / "ben2" / TINY["CutoutGuardLoadBEN2"], size=64)
    build_florence2(root / "florence2" / TINY["CutoutGuardLoadFlorence2"])
    build_llama_guard(root / "LLM" / TINY["CutoutGuardLoadLlamaGuard"], weights="trigger")
    return root


@pytest.fixture(scope="module")
def uploaded(comfyui, tmp_path_factory):
    return comfyui.upload_image(make_photo(tmp_path_factory.mktemp("photo") / "photo.jpg"))


def with_tiny_models(prompt: dict, image_name: str) -> dict:
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] in TINY:
            node["inputs"]["model"] = TINY[node["class_type"]]
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = image_name
    return prompt


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
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian package 'chromium')")
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(comfyui.url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        for path in sorted(REPO.glob("workflows_*/*.json")) + sorted(REPO.glob("example_workflows/*.json")):
            if path.name.endswith(".api.json"):
                continue
            workflow = json.loads(path.read_text())
            converted = page.evaluate(
                """async (workflow) => {
                    await window.app.loadGraphData(workflow);
                    const missing = window.app.graph._nodes.filter(n => n.has_errors || n.type === undefined).map(n => n.type);
                    const { output } = await window.app.graphToPrompt();
                    return { output, missing, count: window.app.graph._nodes.length };
                }""",
                workflow,
            )
            assert not converted["missing"], f"{path.name}: nodes the frontend could not create: {converted['missing']}"
            assert converted["count"] == len(workflow["nodes"])
            api_path = path.with_name(path.stem + ".api.json") if path.parent.name != "example_workflows" else REPO / "workflows_cpu" / (path.stem + ".api.json")
            expected = json.loads(api_path.read_text())
            got = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in converted["output"].items()}
            want = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in expected.items()}
            assert got == want, f"{path.relative_to(REPO)}: the frontend's prompt differs from {api_path.name}"
            print(f"frontend loaded {path.relative_to(REPO)}: {converted['count']} nodes, prompt == {api_path.name}")
        browser.close()
    assert not [e for e in errors if "cutout" in e.lower()], errors
