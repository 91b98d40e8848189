#!/usr/bin/env python3
"""Writes docker/{cpu,gpu}/constraints.txt: the exact version of every Python package each image installs.

Each image runs its pip calls with ``-c docker/<flavour>/constraints.txt``, so what it installs
does not depend on the day it is built. The lock holds the whole dependency closure of what the
image asks for — requirements.txt, the onnxruntime build and llama-cpp-python (the versions the
Dockerfile names) — as pip resolves it on the base image: a package the base already has in a
version that satisfies the pack is kept as it is (the pack's direct requirements are held at
the base's versions while pip resolves); only what the pack needs newer (or what the base
lacks) is installed. Each line says which (``# base``, ``# upgraded from X``, ``# added``).

Needs Docker and the package index (it runs pip's resolver inside the base image, changing
nothing). Run from anywhere after changing requirements.txt, a runtime version in a Dockerfile
or the base image:

    python docker/lock.py                          # both images, on the Dockerfiles' base
    python docker/lock.py --flavour cpu --base runpod/worker-comfyui:5.4.1-base
    DOCKER=/usr/bin/docker python docker/lock.py   # another docker CLI

A test checks each lock against requirements.txt and the Dockerfiles without Docker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAVOURS = ("cpu", "gpu")
BASE_IMAGE = "runpod/worker-comfyui:5.4.1-base"
PROTECTED = ("torch", "torchvision", "torchaudio")  # the base's, never changed (as install.py does)
HEADER = """\
# Every Python package the {flavour} image installs, pinned: the dependency closure of
# requirements.txt, {runtimes}, resolved on
# {base} (Python {python}) by `python docker/lock.py`.
# '# base': the base image's version, kept because it satisfies the pack (and what the pack
# asks for directly is held at the base's version while resolving). Do not edit by hand.
"""


def constraints_path(flavour: str, repo: Path = REPO) -> Path:
    return repo / "docker" / flavour / "constraints.txt"


def dockerfile_arg(flavour: str, name: str, repo: Path = REPO) -> str:
    """The default of ``ARG name=...`` in docker/<flavour>/Dockerfile."""
    text = (repo / "docker" / flavour / "Dockerfile").read_text()
    match = re.search(rf"^ARG {name}=(\S+)\s*$", text, re.MULTILINE)
    if not match:
        raise ValueError(f"docker/{flavour}/Dockerfile has no ARG {name}=...")
    return match.group(1).strip('"')


def requirements(repo: Path = REPO) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in (repo / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line]


def runtimes(flavour: str, repo: Path = REPO) -> list[str]:
    """What the Dockerfile installs beside requirements.txt: the onnxruntime build and llama-cpp-python."""
    llama = f"llama-cpp-python=={dockerfile_arg(flavour, 'LLAMA_CPP_VERSION', repo)}"
    if flavour == "cpu":
        return ["onnxruntime", llama]
    return [f"onnxruntime-gpu=={dockerfile_arg('gpu', 'ONNXRUNTIME_GPU_VERSION', repo)}", llama]


def top_level(flavour: str, repo: Path = REPO) -> list[str]:
    return requirements(repo) + runtimes(flavour, repo)


# ----------------------------------------------------------------------------- resolving (pure)


def _packaging():
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # inside an image: pip's own copy
        from pip._vendor.packaging.markers import default_environment
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    return Requirement, canonicalize_name, default_environment


def closure(wanted: list[str], dists: dict[str, tuple[str, list[str]]], environment: dict | None = None) -> list[str]:
    """Canonical names of ``wanted`` and everything they need, from ``dists`` ({name: (version,
    requires_dist)}, the environment after the install) with markers evaluated for ``environment``."""
    Requirement, canonical, default_environment = _packaging()
    env = dict(environment or default_environment())
    seen: list[str] = []
    queue = [(Requirement(text), "") for text in wanted]
    while queue:
        req, extra = queue.pop(0)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonical(req.name)
        if name not in dists:
            raise ValueError(f"{req} is needed but not installed after the resolve")
        if name in seen and not req.extras:
            continue
        if name not in seen:
            seen.append(name)
        for text in dists[name][1]:
            dep = Requirement(text)
            for wanted_extra in [""] + sorted(req.extras):
                if dep.marker is None or dep.marker.evaluate({**env, "extra": wanted_extra}):
                    queue.append((dep, wanted_extra))
                    break
    return sorted(seen)


def lock_lines(names: list[str], base: dict[str, str], after: dict[str, str]) -> list[str]:
    """``name==version  # base | upgraded from X | added`` for each name (canonical), sorted."""
    lines = []
    for name in sorted(names):
        version = after[name]
        if name in base and base[name] == version:
            origin = "base"
        elif name in base:
            origin = f"upgraded from {base[name]}"
        else:
            origin = "added"
        lines.append(f"{name}=={version}  # {origin}")
    return lines


def parse_lock(text: str) -> dict[str, tuple[str, str]]:
    """{canonical name: (version, origin)} from a constraints file written by :func:`lock_lines`."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)\s+#\s+(.+)", line.strip())
        if not match:
            raise ValueError(f"not a pinned constraint: {line!r}")
        name, version, origin = match.groups()
        if name in out:
            raise ValueError(f"{name} is pinned twice")
        out[name] = (version, origin)
    return out


def keep_pins(wanted: list[str], installed: dict[str, str]) -> dict[str, str]:
    """The base's versions held during the resolve: torch and friends always, and every package the
    pack asks for directly whose installed version already satisfies it. pip then upgrades only
    what a newer requirement forces (e.g. tokenizers for a newer transformers), never what the
    newest release of a dependency would merely prefer (transformers 5 pulling huggingface-hub 1.x)."""
    Requirement, canonical, default_environment = _packaging()
    env = default_environment()
    pins = {n: installed[n] for n in PROTECTED if n in installed}
    for text in wanted:
        req = Requirement(text)
        name = canonical(req.name)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if name in installed and req.specifier.contains(installed[name], prereleases=True):
            pins[name] = installed[name]
    return pins


# ----------------------------------------------------------------------------- inside the base image


def resolve_inside(wanted: list[str]) -> dict:
    """Run pip's resolver (a dry run) here and describe the environment it would leave."""
    import importlib.metadata as md
    import platform

    _, canonical, _ = _packaging()
    installed = {canonical(d.metadata["Name"]): (d.version, list(d.requires or [])) for d in md.distributions()}
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp, "keep.txt")
        kept = keep_pins(wanted, {n: v for n, (v, _) in installed.items()})
        pins.write_text("".join(f"{n}=={v}\n" for n, v in kept.items()))
        report = Path(tmp, "report.json")
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-cache-dir",
                        "--report", str(report), "-c", str(pins), *wanted], check=True, stdout=sys.stderr)
        planned = json.loads(report.read_text())["install"]
    after = dict(installed)
    for item in planned:
        meta = item["metadata"]
        after[canonical(meta["name"])] = (meta["version"], list(meta.get("requires_dist") or []))
    names = closure(wanted, after)
    return {"python": platform.python_version(),
            "base": {n: v for n, (v, _) in installed.items()},
            "after": {n: v for n, (v, _) in after.items()},
            "closure": names}


# ----------------------------------------------------------------------------- on the host


def docker_cli() -> str:
    return os.environ.get("DOCKER", "docker")


def lock(flavour: str, base: str, repo: Path = REPO) -> str:
    wanted = top_level(flavour, repo)
    image_id = subprocess.run([docker_cli(), "image", "inspect", "-f", "{{.Id}}", base], check=True,
                              capture_output=True, text=True).stdout.strip()
    result = subprocess.run(
        [docker_cli(), "run", "--rm", "-v", f"{Path(__file__).resolve()}:/lock.py:ro", "--entrypoint", "python", base,
         "/lock.py", "--inside", json.dumps(wanted)],
        check=True, capture_output=True, text=True)
    state = json.loads(result.stdout)
    header = HEADER.format(flavour=flavour, runtimes=", ".join(runtimes(flavour, repo)),
                           base=f"{base} ({image_id[:19]})", python=state["python"])
    return header + "\n".join(lock_lines(state["closure"], state["base"], state["after"])) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flavour", choices=FLAVOURS + ("all",), default="all")
    parser.add_argument("--base", default=None, help=f"base image (default: the Dockerfiles' BASE_IMAGE, {BASE_IMAGE})")
    parser.add_argument("--inside", metavar="JSON", help=argparse.SUPPRESS)  # run by lock() inside the image
    args = parser.parse_args(argv)
    if args.inside:
        print(json.dumps(resolve_inside(json.loads(args.inside))))
        return 0
    for flavour in FLAVOURS if args.flavour == "all" else (args.flavour,):
        base = args.base or dockerfile_arg(flavour, "BASE_IMAGE")
        path = constraints_path(flavour)
        path.write_text(lock(flavour, base))
        print(f"wrote {path.relative_to(REPO)} (resolved on {base})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
