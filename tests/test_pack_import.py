"""The pack imports the way ComfyUI loads it, in a plain Python process, without heavy runtimes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE_IDS = {  # fixed once shipped: a changed contract gets a new (V2) id
    "CutoutGuardLoadBEN2", "CutoutGuardRemoveBackground", "CutoutGuardLoadFlorence2", "CutoutGuardCaption",
    "CutoutGuardLoadLlamaGuard", "CutoutGuardSafetyCheck", "CutoutGuardSaveReport",
    "CutoutGuardLoadImageGuard", "CutoutGuardImageCheck",
}

LOAD_AS_COMFYUI_DOES = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location(
    "cutout-guard", {str(REPO / '__init__.py')!r}, submodule_search_locations=[{str(REPO)!r}])
module = importlib.util.module_from_spec(spec)
sys.modules["cutout-guard"] = module
spec.loader.exec_module(module)
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'onnxruntime', 'transformers', 'llama_cpp', 'huggingface_hub', 'folder_paths', 'comfy'}})
info = {{name: cls.INPUT_TYPES() for name, cls in module.NODE_CLASS_MAPPINGS.items()}}
print(json.dumps({{"nodes": sorted(module.NODE_CLASS_MAPPINGS), "names": module.NODE_DISPLAY_NAME_MAPPINGS, "heavy": heavy}}))
"""


def load_pack():
    result = subprocess.run([sys.executable, "-c", LOAD_AS_COMFYUI_DOES], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pack_imports_without_comfyui_or_runtimes():
    loaded = load_pack()
    assert set(loaded["nodes"]) == NODE_IDS
    assert loaded["heavy"] == [], f"importing the pack (and listing its inputs) pulled in {loaded['heavy']}"


def test_node_ids_and_display_names():
    loaded = load_pack()
    assert all(node.startswith("CutoutGuard") for node in loaded["nodes"])
    assert set(loaded["names"]) == set(loaded["nodes"])
    assert loaded["names"]["CutoutGuardLoadBEN2"] == "Load BEN2"


def test_node_classes_follow_the_v1_api():
    from cutout_guard import NODE_CLASS_MAPPINGS

    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "Cutout Guard", node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        assert isinstance(cls.RETURN_TYPES, tuple), node_id
        inputs = cls.INPUT_TYPES()
        assert "required" in inputs, node_id
