"""The request body sent to a worker-comfyui endpoint: an API workflow plus the image.

``{"input": {"workflow": {node_id: {class_type, inputs}}, "images": [{"name", "image"}]}}`` —
the worker uploads each image to ComfyUI under ``name``; the workflow's ``LoadImage`` node reads
it by that name.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
from pathlib import Path

from .errors import PolicyError
from ..core.errors import BadInput

IMAGE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def load_workflow(path: str | Path) -> dict:
    """An API-format workflow from ``path``; PolicyError naming the fix when it is not one."""
    path = Path(path)
    try:
        workflow = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(
            f"workflow file not found: {path} — set 'workflow' under [endpoints.*] in the policy file"
        ) from None
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot read the workflow {path}: {exc}") from None
    if not isinstance(workflow, dict) or "nodes" in workflow and isinstance(workflow.get("nodes"), list):
        raise PolicyError(
            f"{path} is a UI workflow, not an API workflow — export it with 'Export (API)' "
            "in ComfyUI and point the policy at the .api.json file"
        )
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs", {}), dict):
            raise PolicyError(f"{path}: node {node_id!r} is not {{class_type, inputs}}: not an API workflow")
    return workflow


def image_node(workflow: dict, node_id: str | None = None, *, source: str = "workflow") -> str:
    """The id of the ``LoadImage`` node that takes the uploaded image."""
    if node_id is not None:
        if node_id not in workflow:
            raise PolicyError(f"{source}: image_node {node_id!r} is not a node of the workflow")
        return node_id
    found = [nid for nid, node in workflow.items() if node.get("class_type") == "LoadImage"]
    if len(found) != 1:
        raise PolicyError(
            f"{source}: expected exactly one LoadImage node, found {len(found)} "
            f"({', '.join(found) or 'none'}) — set image_node in the policy file"
        )
    return found[0]


def with_image(workflow: dict, name: str, node_id: str | None = None, *, source: str = "workflow") -> dict:
    """A copy of ``workflow`` whose LoadImage node reads ``name``."""
    out = copy.deepcopy(workflow)
    out[image_node(out, node_id, source=source)].setdefault("inputs", {})["image"] = name
    return out


def upload_name(data: bytes) -> str:
    """A name for the uploaded image: content-addressed, so concurrent jobs never overwrite each
    other's input on a shared worker. The suffix follows the image's real format."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            kind = image.format
    except Exception as exc:
        raise BadInput(f"the input is not a readable image ({exc}) — pass a PNG, JPEG or WebP file") from None
    if kind not in IMAGE_SUFFIXES:
        raise BadInput(f"the input is a {kind} image; ComfyUI's LoadImage takes PNG, JPEG or WebP — convert it first")
    return f"cutout_guard_{hashlib.sha256(data).hexdigest()[:16]}{IMAGE_SUFFIXES[kind]}"


def payload(workflow: dict, image: bytes, node_id: str | None = None, *, source: str = "workflow") -> dict:
    """The ``/run`` body for one image (bytes of a PNG, JPEG or WebP file)."""
    name = upload_name(image)
    return {
        "input": {
            "workflow": with_image(workflow, name, node_id, source=source),
            "images": [{"name": name, "image": base64.b64encode(image).decode("ascii")}],
        }
    }
