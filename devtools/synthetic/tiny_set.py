"""The set of tiny models a whole workflow runs on: one per loader node, built on the fly.

Used by the real-ComfyUI workflow tests and by ``docker/smoke_test.sh`` (which mounts them into
an image). The names are not the default models' names: the pack checks a default model's real
size, and these are tiny.
"""

from __future__ import annotations

import json
from pathlib import Path

# the tiny model each loader node gets, and the model folder (key) it lies in
TINY = {"CutoutGuardLoadBEN2": "tiny_ben2.onnx", "CutoutGuardLoadFlorence2": "tiny_florence2", "CutoutGuardLoadLlamaGuard": "tiny_guard.gguf",
        "CutoutGuardLoadImageGuard": "red_image_guard"}  # the rigged classifier: unsafe iff the image is mostly red
FOLDERS = {"CutoutGuardLoadBEN2": "ben2", "CutoutGuardLoadFlorence2": "florence2", "CutoutGuardLoadLlamaGuard": "LLM",
           "CutoutGuardLoadImageGuard": "image_guard"}


def build_tiny_models(root: Path) -> None:
    """Write the TINY models under ``root`` (a ComfyUI models root: ``root/<key>/<name>``), those not there yet."""
    from .ben2 import build_ben2
    from .florence2 import build_florence2
    from .image_guard import build_image_guard
    from .llama_guard import build_llama_guard

    builders = {
        "CutoutGuardLoadBEN2": lambda path: build_ben2(path, size=64),
        "CutoutGuardLoadFlorence2": build_florence2,
        "CutoutGuardLoadLlamaGuard": lambda path: build_llama_guard(path, weights="trigger"),
        "CutoutGuardLoadImageGuard": lambda path: build_image_guard(path, weights="red"),
    }
    for node, name in TINY.items():
        path = Path(root) / FOLDERS[node] / name
        if not path.exists():
            builders[node](path)


def with_tiny_models(prompt: dict, image_name: str | None = None) -> dict:
    """A copy of an API prompt whose loaders use the TINY models and whose LoadImage reads ``image_name`` (if given)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] in TINY:
            node["inputs"]["model"] = TINY[node["class_type"]]
        if node["class_type"] == "LoadImage" and image_name is not None:
            node["inputs"]["image"] = image_name
    return prompt
