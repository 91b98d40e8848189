"""Llama Guard in a real ComfyUI: String → Load Llama Guard → Safety Check, verdicts in the history."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("llama_cpp")

from llama_guard_models import model  # noqa: E402

pytestmark = pytest.mark.comfyui


def test_nodes_are_listed(comfyui):
    info = comfyui.object_info()
    assert "CutoutGuardLoadLlamaGuard" in info and "CutoutGuardSafetyCheck" in info, comfyui.log()[-3000:]
    load = info["CutoutGuardLoadLlamaGuard"]["input"]["required"]
    assert load["n_gpu_layers"][1]["default"] == 0 and load["n_gpu_layers"][1]["min"] == -1
    assert info["CutoutGuardSafetyCheck"]["output_name"] == ["safe", "categories", "p_unsafe", "report"]


@pytest.mark.parametrize("caption, safe", [("A photo of a kitten on a sofa.", True), ("A photo of a grenade on a sofa.", False)])
def test_string_to_safety_check_prompt_runs(comfyui, caption, safe):
    shutil.copyfile(model("trigger"), comfyui.models_root / "LLM" / "trigger-guard.gguf")
    prompt = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": caption}},
        "2": {"class_type": "CutoutGuardLoadLlamaGuard", "inputs": {
            "model": "trigger-guard.gguf", "n_gpu_layers": 0, "n_ctx": 2048, "threads": 0, "keep_loaded": True}},
        "3": {"class_type": "CutoutGuardSafetyCheck", "inputs": {
            "llama_guard": ["2", 0], "text": ["1", 0], "policy": "all", "threshold": 0.5}},
    }
    entry = comfyui.run(prompt)
    reports = [json.loads(text) for text in entry["outputs"]["3"]["text"]]
    assert len(reports) == 1 and reports[0]["text"] == caption
    assert reports[0]["safe"] is safe
    assert reports[0]["categories"] == ([] if safe else [{"code": "S1", "name": "Violent Crimes"}])
    print(f"ComfyUI Safety Check: {json.dumps(reports[0])}")
