"""The three workflows, as data. Values that differ between CPU and GPU are ``PerDevice``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Link:
    """An input fed by output ``output`` of node ``node`` (a spec key)."""

    node: str
    output: int = 0


@dataclass(frozen=True)
class PerDevice:
    cpu: Any
    gpu: Any


@dataclass(frozen=True)
class Node:
    key: str
    class_type: str
    title: str
    group: str
    inputs: dict[str, Any] = field(default_factory=dict)  # values or Links; unset widgets take their default


@dataclass(frozen=True)
class Workflow:
    name: str
    title: str
    note: str
    nodes: tuple[Node, ...]


INPUT_IMAGE = "input.png"  # the LoadImage file name API clients upload (RunPod: input.images[].name)

PROVIDER = PerDevice("CPU", "CUDA")
PRECISION = PerDevice("fp32", "fp16")
N_GPU_LAYERS = PerDevice(0, -1)

GROUPS = {
    "image": "1 · Photo",
    "cutout": "2 · Cut out (BEN2)",
    "caption": "3 · Caption (Florence-2)",
    "safety": "4 · Safety (Llama Guard)",
    "save": "5 · Save report",
}

DEVICE_NOTE = (
    "CPU and GPU versions of this workflow differ only in three inputs: Load BEN2 'provider' "
    "(CPU / CUDA), Load Florence-2 'precision' (fp32 / fp16) and Load Llama Guard 'n_gpu_layers' "
    "(0 / -1). Models download on first use into models/ben2, models/florence2 and models/LLM."
)

LOAD_IMAGE = Node("image", "LoadImage", "Photo", "image", {"image": INPUT_IMAGE})
LOAD_BEN2 = Node("ben2", "CutoutGuardLoadBEN2", "Load BEN2", "cutout", {"provider": PROVIDER})
REMOVE = Node(
    "remove", "CutoutGuardRemoveBackground", "Remove Background", "cutout",
    {"ben2": Link("ben2"), "image": Link("image")},
)
LOAD_FLORENCE = Node("florence2", "CutoutGuardLoadFlorence2", "Load Florence-2", "caption", {"precision": PRECISION})
LOAD_GUARD = Node("llama_guard", "CutoutGuardLoadLlamaGuard", "Load Llama Guard", "safety", {"n_gpu_layers": N_GPU_LAYERS})


def caption(image: Link) -> Node:
    return Node("caption", "CutoutGuardCaption", "Caption", "caption", {"florence2": Link("florence2"), "image": image})


SAFETY = Node(
    "safety", "CutoutGuardSafetyCheck", "Safety Check", "safety",
    {"llama_guard": Link("llama_guard"), "text": Link("caption")},
)


def save(image: Link, *, captioned: bool, cut: bool) -> Node:
    inputs: dict[str, Any] = {"images": image}
    if cut:
        inputs["ben2"] = Link("ben2")
    if captioned:
        inputs.update(
            caption=Link("caption"), safety_report=Link("safety", 3),
            florence2=Link("florence2"), llama_guard=Link("llama_guard"),
        )
    return Node("save", "CutoutGuardSaveReport", "Save Cutout Report", "save", inputs)


WORKFLOWS: tuple[Workflow, ...] = (
    Workflow(
        "cutout_caption_safety",
        "Cutout Guard: cut out, caption and safety-check a photo",
        "Cuts the subject out (BEN2), describes the cutout (Florence-2) and checks the description "
        "with Llama Guard 3. The caption is made from the cutout, not the original photo: the cutout "
        "is what gets published, so the check judges what will be shown (the background is removed, "
        "and transparent pixels are shown to Florence-2 on white). Save Cutout Report writes one PNG "
        "per image with the caption and verdict inside (text chunk 'cutout_guard') and a .json "
        "beside it; unsafe images are blurred by default ('unsafe_action'). " + DEVICE_NOTE,
        (
            LOAD_IMAGE, LOAD_BEN2, REMOVE, LOAD_FLORENCE, caption(Link("remove")), LOAD_GUARD, SAFETY,
            save(Link("remove"), captioned=True, cut=True),
        ),
    ),
    Workflow(
        "cutout",
        "Cutout Guard: cut out the subject",
        "Removes the background with BEN2 and saves a transparent PNG per image (with a small report "
        "of the model and timings inside). " + DEVICE_NOTE,
        (LOAD_IMAGE, LOAD_BEN2, REMOVE, save(Link("remove"), captioned=False, cut=True)),
    ),
    Workflow(
        "caption_safety",
        "Cutout Guard: caption and safety-check a photo",
        "Moderation without background removal: Florence-2 describes the whole photo and Llama Guard 3 "
        "checks the description. The saved PNG is the original photo (blurred when unsafe) with the "
        "caption and verdict inside. " + DEVICE_NOTE,
        (
            LOAD_IMAGE, LOAD_FLORENCE, caption(Link("image")), LOAD_GUARD, SAFETY,
            save(Link("image"), captioned=True, cut=False),
        ),
    ),
)
