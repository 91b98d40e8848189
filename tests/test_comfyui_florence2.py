"""Florence-2 in a real ComfyUI: LoadImage → Load Florence-2 → Caption runs and the captions reach the history."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from devtools.synthetic.florence2 import build_florence2

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def tiny_model(comfyui):
    folder = comfyui.models_root / "florence2" / "tiny-florence2"
    if not folder.exists():
        build_florence2(folder)
    return folder.name


def upload(comfyui, tmp_path, seed, name):
    path = tmp_path / name
    Image.fromarray((np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8)).save(path)
    return comfyui.upload_image(path)


def caption_prompt(model, images, precision="fp32"):
    """API prompt: LoadImage per name (joined with ImageBatch) → Load Florence-2 → Caption."""
    prompt = {
        "10": {"class_type": "CutoutGuardLoadFlorence2", "inputs": {"model": model, "precision": precision, "device": "default", "keep_loaded": True}},
    }
    source = None
    for index, name in enumerate(images):
        prompt[str(index + 1)] = {"class_type": "LoadImage", "inputs": {"image": name}}
        if source is None:
            source = [str(index + 1), 0]
        else:
            prompt[f"b{index}"] = {"class_type": "ImageBatch", "inputs": {"image1": source, "image2": [str(index + 1), 0]}}
            source = [f"b{index}", 0]
    prompt["20"] = {"class_type": "CutoutGuardCaption", "inputs": {
        "florence2": ["10", 0], "image": source, "task": "<CAPTION>", "max_new_tokens": 12, "num_beams": 3,
        "color": "#FFFFFF"}}
    return prompt


def test_nodes_are_listed(comfyui):
    info = comfyui.object_info()
    assert "CutoutGuardLoadFlorence2" in info and "CutoutGuardCaption" in info, comfyui.log()[-3000:]
    caption = info["CutoutGuardCaption"]
    assert caption["output"] == ["STRING", "STRING"] and caption["output_is_list"] == [True, True] and caption["output_node"] is True
    assert caption["output_name"] == ["caption", "report"]  # output 0 stays the caption saved workflows link to
    assert "Florence-2-base" in info["CutoutGuardLoadFlorence2"]["input"]["required"]["model"][0]


def test_caption_prompt_reaches_the_history(comfyui, tiny_model, tmp_path):
    first, second = upload(comfyui, tmp_path, 0, "first.png"), upload(comfyui, tmp_path, 1, "second.png")
    one = comfyui.run(caption_prompt(tiny_model, [first]))["outputs"]["20"]["text"]
    two = comfyui.run(caption_prompt(tiny_model, [second], precision="fp16"))["outputs"]["20"]["text"]
    both = comfyui.run(caption_prompt(tiny_model, [first, second]))["outputs"]["20"]["text"]
    print(f"ComfyUI captions: first {one!r}, second (fp16 asked, CPU) {two!r}, batch {both!r}")
    assert len(one) == 1 and len(two) == 1 and one[0].strip() and two[0].strip()
    assert both == one + two  # a batch gives one caption per image, in order
    assert one != two
    assert "Florence-2: fp16 requested; the CPU has no fp16 kernels for it (e.g. LayerNorm), running fp32" in comfyui.log()


def wait_for_log(comfyui, text, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in comfyui.log():
            return True
        time.sleep(0.25)
    return False


def test_free_memory_request_releases_the_model(comfyui, tiny_model, tmp_path):
    """The model lives in the loader's output: ComfyUI's "free memory" drops it (no cache of our own)."""
    name = upload(comfyui, tmp_path, 2, "third.png")
    prompt = caption_prompt(tiny_model, [name], precision="bf16")  # its own loader inputs: a fresh handle
    comfyui.run(prompt)
    released = f"Released Florence-2 {tiny_model} (bf16 on cpu)"
    assert released not in comfyui.log()  # keep_loaded on: still loaded after the run
    comfyui.free_memory()
    assert wait_for_log(comfyui, released), comfyui.log()[-3000:]
    prompt["10"]["inputs"]["keep_loaded"] = False
    prompt["20"]["inputs"]["max_new_tokens"] = 11  # not a cached result: the caption runs again
    before = comfyui.log().count(released)
    comfyui.run(prompt)
    assert wait_for_log(comfyui, released) and comfyui.log().count(released) >= before + 2  # after load and after the run
