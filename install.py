#!/usr/bin/env python3
"""Install what Cutout Guard needs into this Python: the right onnxruntime and llama-cpp-python
builds for this machine, and (on request) the default models.

ComfyUI-Manager runs this file with ComfyUI's Python from the pack's folder after installing
requirements.txt. By hand:

    python install.py --dry-run                       # print the plan, change nothing
    python install.py                                 # packages only
    python install.py --models ben2,florence2,llama_guard
    python install.py --build cpu --comfyui /path/to/ComfyUI --models all

CPU or GPU is detected (nvidia-smi, /proc/driver/nvidia, libcuda); --build or
CUTOUT_GUARD_BUILD=cpu|cuda overrides it (e.g. when building an image on another machine).
--device and CUTOUT_GUARD_DEVICE, their old names, still work.
Running it again changes nothing. The decisions live in nodes/install/installer.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import types
from pathlib import Path

# Not resolved: a pack linked into ComfyUI/custom_nodes belongs to that ComfyUI.
PACK = Path(os.path.abspath(__file__)).parent
log = logging.getLogger("cutout_guard.install")


def _package():
    """The pack's ``nodes/`` folder as package ``cutout_guard``, whether or not it is pip-installed.

    The package's ``__init__`` is not run: it registers ComfyUI nodes and imports numpy, which may
    not be installed yet when this runs. The modules used here import only the standard library.
    """
    pkg = sys.modules.get("cutout_guard")
    if pkg is None or Path(getattr(pkg, "__path__", [""])[0]).resolve() != (PACK / "nodes").resolve():
        pkg = types.ModuleType("cutout_guard")
        pkg.__path__ = [str(PACK / "nodes")]
        sys.modules["cutout_guard"] = pkg
    import cutout_guard.install.installer as installer
    import cutout_guard.core.models as models

    return installer, models


class _Stdout(logging.StreamHandler):
    """Messages to whatever sys.stdout is now (ComfyUI-Manager shows the script's output)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def _show_messages():
    """The pack's log messages on stdout while the installer runs; the logger is restored after."""
    pack_log = logging.getLogger("cutout_guard")
    saved = (pack_log.level, pack_log.propagate)
    handler = _Stdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    pack_log.addHandler(handler)
    pack_log.setLevel(logging.INFO)
    pack_log.propagate = False
    try:
        yield
    finally:
        pack_log.removeHandler(handler)
        pack_log.setLevel(saved[0])
        pack_log.propagate = saved[1]


def _arguments(argv):
    p = argparse.ArgumentParser(prog="install.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--build", "--device", dest="build", choices=("auto", "cpu", "cuda"), default=None,
                   help="runtime builds to install (default: $CUTOUT_GUARD_BUILD, else detected; --device is its old name)")
    p.add_argument("--models", default="", metavar="KINDS",
                   help="comma-separated model kinds to download (kind or kind:name), or 'all'")
    p.add_argument("--models-only", action="store_true", help="only download models; leave packages alone")
    p.add_argument("--comfyui", metavar="DIR", help="ComfyUI folder (default: two levels up from this pack)")
    p.add_argument("--llama-source", action="store_true",
                   help="build llama-cpp-python from source even where a prebuilt wheel exists (honours CMAKE_ARGS)")
    p.add_argument("--machine", metavar="FACTS",
                   help="with --dry-run: plan for another machine with nothing installed, e.g. python=3.11,platform=linux,arch=x86_64,cuda=12.4,compiler=no")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _arguments(argv)
    with _show_messages():
        return _main(args)


def _main(args) -> int:
    installer, models = _package()

    try:
        wanted = installer.parse_models(args.models, models.KINDS)
    except ValueError as exc:
        log.error("install.py: %s", exc)
        return 2
    root = installer.comfyui_root(PACK, args.comfyui)
    if wanted and root is None:
        log.error("install.py: this pack is not inside ComfyUI/custom_nodes; pass --comfyui DIR to say where models go")
        return 2

    def folders(key: str) -> list[Path]:
        return [root / "models" / key]

    def present_models() -> dict:
        return {(k, n): models.find_model(models.KINDS[k], n, folders(models.KINDS[k].folder_key)) for k, n in wanted}

    machine = installer.look_at_machine()
    if args.machine:
        if not args.dry_run:
            log.error("install.py: --machine describes another machine: use it with --dry-run")
            return 2
        try:
            machine = installer.described_machine(machine, args.machine)
        except ValueError as exc:
            log.error("install.py: %s", exc)
            return 2
    installed = installer.Installed() if args.machine else installer.installed_packages()  # another machine: nothing installed there
    if not (args.models_only or args.llama_source):  # which prebuilt llama-cpp-python wheels exist for this machine
        base = installer.wheel_index_base(machine.env)  # the index the plan then hands to pip
        tags = installer.wheel_tags(machine, installed)
        machine = dataclasses.replace(machine, wheel_index=installer.read_wheel_index(base, tags))
    request = installer.Request(build=args.build, models=wanted, llama_source=args.llama_source,
                                skip_packages=args.models_only)
    try:
        build, steps = installer.make_plan(machine, installed, request,
                                            {key: path is not None for key, path in present_models().items()})
    except ValueError as exc:
        log.error("install.py: %s", exc)
        return 2

    log.info("Cutout Guard installer — Python %s (%s)", sys.version.split()[0], sys.executable)
    if root is not None:
        log.info("ComfyUI folder: %s", root)
    todo = installer.changes(steps)
    log.info("Plan (%s):", "nothing to change" if not todo else f"{len(todo)} change(s)")
    for step in steps:
        log.info("  - %s", step.describe().replace("\n", "\n    "))

    failed: list[str] = []
    if args.dry_run:
        log.info("Dry run: nothing was changed. Current state:")
    elif steps:
        outcome = installer.carry_out(steps, installed=installed, model_folders=folders)
        failed = outcome.failed
        installed = installer.installed_packages()
    log.info("%s", installer.summary(build, installed, present_models(), failed))
    strict = os.environ.get(installer.STRICT_ENV) == "1"  # an image build: a missing llama-cpp-python fails it
    if failed and not strict and all(target.startswith("llama-cpp-python") for target in failed):
        # everything else is installed and the pack loads; only the Llama Guard nodes wait for it
        log.warning("WARNING: llama-cpp-python could not be installed, so the Llama Guard nodes cannot run yet; "
                    "everything else is installed. To finish, run in this folder (it builds llama-cpp-python, "
                    "%s min on 2 cores): %s", installer.LLAMA_SOURCE_BUILD_MINUTES, installer.LLAMA_SOURCE_COMMAND)
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
