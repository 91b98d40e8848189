#!/usr/bin/env python3
"""Writes docker/{cpu,gpu}/test_input.json: the RunPod request each image answers in local test mode.

Each file is generated, never edited by hand: the full-pipeline API workflow of the matching
folder (workflows_cpu/ or workflows_gpu/cutout_caption_safety.api.json) plus docker/common/
test_image.png as base64, uploaded under the name each LoadImage node reads. A test regenerates
both and compares. Run from anywhere:

    python docker/make_test_input.py           # write both files
    python docker/make_test_input.py --check   # exit 1 if a committed file is out of date
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "docker" / "common" / "test_image.png"
WORKFLOW = "cutout_caption_safety.api.json"
TARGETS = {"cpu": "workflows_cpu", "gpu": "workflows_gpu"}


def request(workflow: dict, image_png: bytes) -> dict:
    """``{"input": {"workflow": ..., "images": [{"name", "image"}]}}`` with one image per LoadImage name."""
    names = sorted({node["inputs"]["image"] for node in workflow.values() if node.get("class_type") == "LoadImage"})
    if not names:
        raise ValueError("the workflow has no LoadImage node to feed the test image to")
    data = "data:image/png;base64," + base64.b64encode(image_png).decode("ascii")
    return {"input": {"workflow": workflow, "images": [{"name": name, "image": data} for name in names]}}


def render(flavour: str, repo: Path = REPO) -> str:
    workflow = json.loads((repo / TARGETS[flavour] / WORKFLOW).read_text())
    return json.dumps(request(workflow, IMAGE.read_bytes()), indent=2) + "\n"


def target(flavour: str, repo: Path = REPO) -> Path:
    return repo / "docker" / flavour / "test_input.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for flavour in TARGETS:
        text, path = render(flavour), target(flavour)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(REPO)))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("out of date (run python docker/make_test_input.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
