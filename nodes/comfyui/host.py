"""Everything the node adapters need from ComfyUI, in one place, with plain-Python fallbacks.

Inside ComfyUI: model folders come from ``folder_paths`` (so ``extra_model_paths.yaml`` works),
progress goes to ComfyUI's progress bar and a cancel in the UI stops work between images.
Outside it (tests, scripts calling the nodes directly) model folders are
``$CUTOUT_GUARD_MODELS_DIR/<key>`` (default ``./models/<key>``), progress is logged and nothing
cancels. Engines never import this module.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..core import vocab
from ..core.models import KINDS, get_kind, list_models

log = logging.getLogger(__name__)

CATEGORY = "Cutout Guard"  # where every node of the pack appears in ComfyUI's menu
# the loaders' switch that ModelHandle.done() obeys
KEEP_LOADED = ("BOOLEAN", {"default": True, "tooltip": "On: stay in memory between runs. Off: free the model after each run."})


def threads_input(auto: str) -> tuple:
    """Every loader's ``threads`` input; ``auto`` says what 0 means for that runtime."""
    return ("INT", {"default": vocab.DEFAULT_THREADS, "min": 0, "max": 512, "tooltip": f"CPU threads. 0 = auto: {auto}."})


def _folder_paths():
    try:
        import folder_paths  # ComfyUI's module; absent in a plain Python process
    except ImportError:
        return None
    return folder_paths


def in_comfyui() -> bool:
    return _folder_paths() is not None


def register_model_folders() -> None:
    """Add the pack's model folders to ComfyUI, appending to any that exist (never replacing)."""
    fp = _folder_paths()
    if fp is None:
        return
    for kind in KINDS.values():
        default_dir = os.path.join(fp.models_dir, kind.folder_key)
        entry = fp.folder_names_and_paths.get(kind.folder_key)
        if entry is None:
            fp.folder_names_and_paths[kind.folder_key] = ([default_dir], set(kind.extensions))
            continue
        paths, extensions = entry
        if default_dir not in paths:
            paths.append(default_dir)
        if extensions:  # an empty set means "any file": leave it so
            extensions.update(kind.extensions)


def renamed(value, old_value, node: str, old: str, new: str, default):
    """The value of an input renamed from ``old`` to ``new``: the new one when given, else the old one
    (a workflow saved before the rename), else ``default``. Saved workflows keep working."""
    if value is not None:
        return value
    if old_value is not None:
        log.warning("%s: the input '%s' is now called '%s'; this workflow still uses the old name (it works, "
                    "and saving the workflow again writes the new one)", node, old, new)
        return old_value
    return default


# Every node names its model kind by its word (vocab.MODEL_KINDS); the kind is looked up when used.


def model_folders(kind_name: str) -> list[Path]:
    """Folders searched for a kind's models; downloads go to the first that exists (core.download.download_folder)."""
    kind = get_kind(kind_name)
    fp = _folder_paths()
    if fp is not None:
        register_model_folders()
        return [Path(p) for p in fp.get_folder_paths(kind.folder_key)]
    root = Path(os.environ.get("CUTOUT_GUARD_MODELS_DIR", "models"))
    return [root / kind.folder_key]


def model_choices(kind_name: str) -> list[str]:
    """Dropdown entries: the default models first, then what is found in the model folders."""
    kind = get_kind(kind_name)
    fp = _folder_paths()
    if fp is not None and not kind.is_folder:
        register_model_folders()
        names = [d.name for d in kind.defaults]
        names += [n for n in fp.get_filename_list(kind.folder_key) if n.lower().endswith(kind.extensions)]
        return list(dict.fromkeys(names))
    return list_models(kind, model_folders(kind_name))


def default_model(kind_name: str) -> str:
    """The name of the kind's first default model (the loader's default choice)."""
    return get_kind(kind_name).defaults[0].name


def model_path(kind_name: str, name: str) -> Path:
    """The verified local path of a model, downloading a default model when it is missing."""
    from ..core.download import obtain

    kind = get_kind(kind_name)
    bar = Progress(100)

    def report(done: int, total: int) -> None:
        if total:
            bar.update_absolute(min(100, done * 100 // total))

    return obtain(kind, name, model_folders(kind_name), progress=report)


class Progress:
    """ComfyUI's progress bar for the running node, or a no-op outside ComfyUI."""

    def __init__(self, total: int):
        self.total = max(1, total)
        self.value = 0
        self._bar = None
        try:
            import comfy.utils

            self._bar = comfy.utils.ProgressBar(self.total)
        except Exception:  # not inside ComfyUI, or no node is running
            self._bar = None

    def update_absolute(self, value: int) -> None:
        self.value = value
        if self._bar is not None:
            self._bar.update_absolute(value, self.total)

    def step(self) -> None:
        self.update_absolute(self.value + 1)


def graph_chunks(prompt, extra_pnginfo) -> dict[str, str]:
    """The text chunks ComfyUI's SaveImage writes so that dropping the PNG on the canvas restores the
    graph: ``prompt`` and each key of ``extra_pnginfo`` (the frontend's ``workflow``), as JSON; none
    when ComfyUI runs with ``--disable-metadata`` (the report chunk is written regardless)."""
    try:
        from comfy.cli_args import args

        if args.disable_metadata:
            return {}
    except ImportError:  # outside ComfyUI
        pass
    chunks = {} if prompt is None else {"prompt": json.dumps(prompt)}
    for key, value in (extra_pnginfo or {}).items():
        chunks[key] = json.dumps(value)
    return chunks


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed cancel."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def torch_device():
    """ComfyUI's torch device, or CUDA when available, else CPU."""
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except ImportError:
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save_path(prefix: str, width: int, height: int) -> tuple[Path, str, int, str]:
    """(folder, file stem base, first counter, subfolder) for new output files, as SaveImage does.

    Outside ComfyUI the output folder is ``$CUTOUT_GUARD_OUTPUT_DIR`` (default ``./output``).
    """
    fp = _folder_paths()
    if fp is not None:
        folder, filename, counter, subfolder, _ = fp.get_save_image_path(prefix, fp.get_output_directory(), width, height)
        return Path(folder), filename, counter, subfolder
    root = Path(os.environ.get("CUTOUT_GUARD_OUTPUT_DIR", "output"))
    folder = (root / prefix).parent
    filename = Path(prefix).name
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.stem.rsplit("_", 2)[-2]) for p in folder.glob(f"{filename}_*_.png") if p.stem.rsplit("_", 2)[-2].isdigit()]
    return folder, filename, max(taken, default=0) + 1, str(folder.relative_to(root)) if folder != root else ""
