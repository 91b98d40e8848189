"""The four workflows, as data. Values that differ between CPU and GPU are ``PerDevice``."""

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
    "image_check": "3 · Image check (NSFW)",
    "caption": "4 · Caption (Florence-2)",
    "safety": "5 · Text check (Llama Guard)",
    "save": "6 · Save report",
}

DEVICE_NOTE = (
    "CPU and GPU versions of this workflow differ only in these inputs: Load BEN2 'provider' "
    "(CPU / CUDA), Load Florence-2 and Load Image Guard 'precision' (fp32 / fp16) and Load Llama Guard "
    "'n_gpu_layers' (0 / -1). Models download on first use into models/ben2, models/image_guard, "
    "models/florence2 and models/LLM."
)
SAVE_NOTE = (
    "Save Cutout Report writes one PNG per image with the caption and each check's verdict inside "
    "(text chunk 'cutout_guard', report schema 2) and a .json beside it; an image is safe only when every "
    "check that ran says so, and unsafe images are blurred by default ('unsafe_action'). "
)

LOAD_IMAGE = Node("image", "LoadImage", "Photo", "image", {"image": INPUT_IMAGE})
LOAD_BEN2 = Node("ben2", "CutoutGuardLoadBEN2", "Load BEN2", "cutout", {"provider": PROVIDER})
REMOVE = Node(
    "remove", "CutoutGuardRemoveBackground", "Remove Background", "cutout",
    {"ben2": Link("ben2"), "image": Link("image")},
)
LOAD_IMAGE_GUARD = Node("image_guard", "CutoutGuardLoadImageGuard", "Load Image Guard", "image_check", {"precision": PRECISION})
LOAD_FLORENCE = Node("florence2", "CutoutGuardLoadFlorence2", "Load Florence-2", "caption", {"precision": PRECISION})
LOAD_GUARD = Node("llama_guard", "CutoutGuardLoadLlamaGuard", "Load Llama Guard", "safety", {"n_gpu_layers": N_GPU_LAYERS})


def image_check(image: Link) -> Node:
    return Node("image_check", "CutoutGuardImageCheck", "Image Check", "image_check", {"image_guard": Link("image_guard"), "image": image})


def caption(image: Link) -> Node:
    return Node("caption", "CutoutGuardCaption", "Caption", "caption", {"florence2": Link("florence2"), "image": image})


SAFETY = Node(
    "safety", "CutoutGuardSafetyCheck", "Safety Check", "safety",
    {"llama_guard": Link("llama_guard"), "text": Link("caption")},
)


def save(image: Link, *, captioned: bool, cut: bool, image_checked: bool) -> Node:
    """Save Cutout Report fed by the apply nodes' per-image reports (never by the loaders)."""
    inputs: dict[str, Any] = {"images": image}
    if cut:
        inputs["cutout_report"] = Link("remove", 2)
    if image_checked:
        inputs["image_report"] = Link("image_check", 2)
    if captioned:
        inputs.update(caption=Link("caption"), safety_report=Link("safety", 3), caption_report=Link("caption", 1))
    return Node("save", "CutoutGuardSaveReport", "Save Cutout Report", "save", inputs)


WORKFLOWS: tuple[Workflow, ...] = (
    Workflow(
        "cutout_caption_safety",
        "Cutout Guard: cut out, then check the cutout itself and its caption",
        "Cuts the subject out (BEN2), checks the cutout itself with an NSFW image classifier, describes "
        "it (Florence-2) and checks the description with Llama Guard 3. Both checks judge the cutout, not "
        "the original photo: the cutout is what gets published, so they judge what will be shown (the "
        "background is removed, and transparent pixels are shown to both on white). " + SAVE_NOTE + DEVICE_NOTE,
        (
            # node ids follow this order: nodes added later come last, so saved workflows keep theirs
            LOAD_IMAGE, LOAD_BEN2, REMOVE, LOAD_FLORENCE, caption(Link("remove")), LOAD_GUARD, SAFETY,
            save(Link("remove"), captioned=True, cut=True, image_checked=True), LOAD_IMAGE_GUARD, image_check(Link("remove")),
        ),
    ),
    Workflow(
        "cutout",
        "Cutout Guard: cut out the subject",
        "Removes the background with BEN2 and saves a transparent PNG per image (with a small report "
        "of the model and timings inside; no safety check runs, so its verdict is null). " + DEVICE_NOTE,
        (LOAD_IMAGE, LOAD_BEN2, REMOVE, save(Link("remove"), captioned=False, cut=True, image_checked=False)),
    ),
    Workflow(
        "caption_safety",
        "Cutout Guard: check a photo itself and its caption",
        "Moderation without background removal: an NSFW image classifier judges the whole photo, "
        "Florence-2 describes it and Llama Guard 3 checks the description. The saved PNG is the original "
        "photo (blurred when unsafe) with the caption and both verdicts inside. " + DEVICE_NOTE,
        (
            LOAD_IMAGE, LOAD_FLORENCE, caption(Link("image")), LOAD_GUARD, SAFETY,
            save(Link("image"), captioned=True, cut=False, image_checked=True), LOAD_IMAGE_GUARD, image_check(Link("image")),
        ),
    ),
    Workflow(
        "cutout_image_safety",
        "Cutout Guard: cut out and check the cutout itself (fast, no caption)",
        "The fast path: cuts the subject out (BEN2) and checks the cutout itself with an NSFW image "
        "classifier, shown on white as it will be published; no caption and no text check (the report's "
        "caption and text check are null). " + SAVE_NOTE + DEVICE_NOTE,
        (
            LOAD_IMAGE, LOAD_BEN2, REMOVE, LOAD_IMAGE_GUARD, image_check(Link("remove")),
            save(Link("remove"), captioned=False, cut=True, image_checked=True),
        ),
    ),
)
