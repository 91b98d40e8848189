#!/usr/bin/env python3
"""Writes docker/{cpu,gpu}/test_input.json and test_input.tiny.json: requests each image answers.

``test_input.json`` is what RunPod's local test mode sends: the full-pipeline API workflow of the
matching folder (workflows_cpu/ or workflows_gpu/cutout_caption_safety.api.json) on the default
models, plus docker/common/test_image.png as base64, uploaded under the name each LoadImage node
reads. ``test_input.tiny.json`` is the same request on the tiny models of
devtools/synthetic/tiny_set.py (what docker/smoke_test.sh mounts), so an image can be checked
without the real weights:

    python -u /handler.py --test_input "$(cat /test_input.tiny.json)"

Every file is generated, never edited by hand; a test regenerates them and compares. Run from anywhere:

    python docker/make_test_input.py           # write the files
    python docker/make_test_input.py --check   # exit 1 if a committed file is out of date
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # devtools/, when run as a script

from devtools.synthetic.tiny_set import with_tiny_models  # noqa: E402

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


def render(flavour: str, repo: Path = REPO, *, tiny: bool = False) -> str:
    workflow = json.loads((repo / TARGETS[flavour] / WORKFLOW).read_text())
    if tiny:
        workflow = with_tiny_models(workflow)
    return json.dumps(request(workflow, IMAGE.read_bytes()), indent=2) + "\n"


def target(flavour: str, repo: Path = REPO, *, tiny: bool = False) -> Path:
    return repo / "docker" / flavour / ("test_input.tiny.json" if tiny else "test_input.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for flavour, tiny in ((f, t) for f in TARGETS for t in (False, True)):
        text, path = render(flavour, tiny=tiny), target(flavour, tiny=tiny)
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
