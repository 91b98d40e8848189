#!/usr/bin/env python3
"""The host side of docker/smoke_test.sh: tiny models, requests to a running image, what came back.

Runs with a Python that has the pack and its test extras (``pip install -e '.[test]'``): the tiny
models are built with the pack's own builders (devtools/synthetic), the answers are read with the
pack's own report reader (the router's). Subcommands:

    python docker/smoke.py models DIR                   # the tiny models, as DIR/<model folder>/<name>
    python docker/smoke.py post URL cpu                 # each CPU API workflow to a worker's /runsync
    python docker/smoke.py threads LOG ENVIRON N        # what the runtimes chose, from the worker's log
    python docker/smoke.py freeze cpu < pip-freeze.txt  # the image's packages against its lock

Each prints what it saw and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # devtools/, when run as a script

from devtools.synthetic.tiny_set import TINY, build_tiny_models, with_tiny_models  # noqa: E402

FOLDER = {"cpu": "workflows_cpu", "gpu": "workflows_gpu"}
IMAGE = REPO / "docker" / "common" / "test_image.png"


class Failed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


# ----------------------------------------------------------------------------- requests


def red_photo() -> bytes:
    """A mostly red photo: the rigged image guard of the tiny set calls it unsafe."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    pixels = np.clip(np.asarray((0.85, 0.1, 0.1), np.float32) + 0.08 * rng.standard_normal((96, 128, 3)), 0, 1)
    out = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def cases(flavour: str) -> list[tuple[str, str, bytes, bool | None]]:
    """(label, API workflow file, photo, expected image-check verdict or None) for each request."""
    out = []
    for path in sorted((REPO / FOLDER[flavour]).glob("*.api.json")):
        out.append((path.name.removesuffix(".api.json"), path.name, IMAGE.read_bytes(), None))
        if "CutoutGuardImageCheck" in path.read_text():
            out.append((path.name.removesuffix(".api.json") + " (red photo)", path.name, red_photo(), False))
    return out


def request(workflow: dict, photo: bytes) -> dict:
    names = sorted({n["inputs"]["image"] for n in workflow.values() if n["class_type"] == "LoadImage"})
    data = "data:image/png;base64," + base64.b64encode(photo).decode("ascii")
    return {"input": {"workflow": with_tiny_models(workflow), "images": [{"name": n, "image": data} for n in names]}}


def runsync(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url.rstrip("/") + "/runsync", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def post(url: str, flavour: str, timeout: float) -> int:
    from PIL import Image

    from cutout_guard.router.result import report_image, verdict_of

    failures = 0
    for label, name, photo, image_verdict in cases(flavour):
        workflow = json.loads((REPO / FOLDER[flavour] / name).read_text())
        started = time.monotonic()
        try:
            answer = runsync(url, request(workflow, photo), timeout)
            check(answer.get("status") == "COMPLETED", f"job {answer.get('status')}: {json.dumps(answer)[:800]}")
            found = report_image(answer["output"], job_id=answer.get("id"))
            report = found.report
            with Image.open(io.BytesIO(found.png)) as png:
                png.load()
                size, mode = png.size, png.mode
            with Image.open(io.BytesIO(photo)) as source:
                check(size == source.size, f"the PNG is {size}, the photo {source.size}")
            models = {m for m in json.dumps(report.get("models") or report).split('"') if m in TINY.values()}
            check(bool(models), f"the report names none of the tiny models: {json.dumps(report)[:400]}")
            checks = [c for c in (report.get("image"), report.get("text")) if c is not None]
            check(report.get("safe") == (all(c.get("safe") is True for c in checks) if checks else None),
                  f"the overall verdict {report.get('safe')!r} does not follow from the checks")
            if image_verdict is not None:
                check(report["image"]["safe"] is image_verdict, f"image check said {report['image']['safe']!r}")
                check(report["safe"] is False and report.get("unsafe_action") in ("blur", "withhold"),
                      "an unsafe photo came back without its unsafe action")
            verdict = verdict_of(report) or "no check ran"
            caption = report.get("caption")
            print(f"  {label}: {verdict} ({time.monotonic() - started:.1f} s) — {found.filename} {mode} {size[0]}x{size[1]}, "
                  f"image check {_short(report.get('image'))}, text check {_short(report.get('text'))}, "
                  f"caption {json.dumps(caption)[:60] if caption is not None else None}")
        except (Failed, OSError, ValueError, KeyError) as exc:
            failures += 1
            print(f"  {label}: FAILED — {exc}")
    return 1 if failures else 0


def _short(check_report: dict | None) -> str:
    if check_report is None:
        return "did not run"
    return "safe" if check_report.get("safe") is True else "unsafe"


# ----------------------------------------------------------------------------- threads

# the loaders' own log lines (nodes/engines): what each runtime was told, or chose
THREAD_LINES = {
    "onnxruntime (BEN2)": re.compile(r"BEN2: \S+ on CPU, (\d+) threads"),
    "torch (Florence-2)": re.compile(r"Florence-2: \S+ on cpu in \w+, (\d+) threads"),
    "llama.cpp (Llama Guard)": re.compile(r"Loaded Llama Guard \S+ \([^,]+, (\d+) threads"),
}
ENV_THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads(log_text: str, environ: str, expected: int) -> int:
    failures = 0
    for runtime, pattern in THREAD_LINES.items():
        seen = sorted({int(m) for m in pattern.findall(log_text)})
        ok = seen == [expected]
        failures += not ok
        print(f"  {runtime}: {', '.join(map(str, seen)) or 'no load logged'} thread(s){'' if ok else f'  FAILED (expected {expected})'}")
    env = dict(line.split("=", 1) for line in environ.splitlines() if "=" in line)
    for name in ENV_THREADS:
        ok = env.get(name) == str(expected)
        failures += not ok
        print(f"  ComfyUI's {name}={env.get(name, '(unset)')}{'' if ok else f'  FAILED (expected {expected})'}")
    warnings = [line for line in log_text.splitlines() if "Invalid value for environment variable" in line]
    failures += bool(warnings)
    print(f"  OpenMP warnings: {len(warnings)}" + (f"  FAILED: {warnings[0]}" if warnings else ""))
    return 1 if failures else 0


# ----------------------------------------------------------------------------- packages


def freeze(flavour: str, frozen: str) -> int:
    """Every package in the lock is installed at its pinned version."""
    sys.path.insert(0, str(REPO / "docker"))
    from lock import constraints_path, parse_lock

    from packaging.utils import canonicalize_name

    installed = {}
    for line in frozen.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            installed[canonicalize_name(name)] = version.strip()
    locked = parse_lock(constraints_path(flavour).read_text())
    wrong = [f"{n} {installed.get(n, 'missing')} (locked {v})" for n, (v, _) in locked.items() if installed.get(n) != v]
    print(f"  {len(locked) - len(wrong)} of {len(locked)} locked packages at their pinned version"
          + (": " + ", ".join(wrong) if wrong else ""))
    return 1 if wrong else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models")
    p.add_argument("folder", type=Path)
    p = sub.add_parser("post")
    p.add_argument("url")
    p.add_argument("flavour", choices=FOLDER)
    p.add_argument("--timeout", type=float, default=600)
    p = sub.add_parser("threads")
    p.add_argument("log", type=Path)
    p.add_argument("environ", type=Path)
    p.add_argument("expected", type=int)
    p = sub.add_parser("freeze")
    p.add_argument("flavour", choices=FOLDER)
    args = parser.parse_args(argv)
    if args.command == "models":
        build_tiny_models(args.folder)
        for path in sorted(args.folder.glob("*/*")):
            print(f"  {path.relative_to(args.folder)}")
        return 0
    if args.command == "post":
        return post(args.url, args.flavour, args.timeout)
    if args.command == "threads":
        return threads(args.log.read_text(errors="replace"), args.environ.read_text(errors="replace"), args.expected)
    return freeze(args.flavour, sys.stdin.read())


if __name__ == "__main__":
    sys.exit(main())
