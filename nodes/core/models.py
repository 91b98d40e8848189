"""Which model files the pack uses, where they live, and how they are checked.

A *kind* (``ben2``, ``florence2``, ``llama_guard``, ``image_guard``) names one model family. Each kind has a
model-folder key (the name ComfyUI's ``folder_paths`` and ``extra_model_paths.yaml`` use), a
default model that is downloaded on request, and the files that make it up. Nothing here knows
ComfyUI: callers pass the folders to search, so the nodes, ``install.py`` and the command line
share one code path.

Integrity: every downloaded file is checked against the sha256 the hub reports for it (an LFS
file's ETag is its sha256) and against any value pinned here, then recorded in a lock file beside
the model (``<name>.lock.json`` for a file, ``cutout-guard.lock.json`` inside a model folder).
Later loads compare size and modification time with the lock and re-hash only when they changed,
so a truncated or replaced file is caught without hashing gigabytes on every load.
"""

from __future__ import annotations

import hashlib
import json
import struct
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelCorrupt, ModelMissing

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock.json"
FOLDER_LOCK = "cutout-guard.lock.json"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a default model on the Hugging Face hub."""

    filename: str  # path inside the repository, also the path inside the model folder
    size: int | None = None  # pinned byte count, when known
    sha256: str | None = None  # pinned hash, when known


@dataclass(frozen=True)
class DefaultModel:
    """A model the pack can download by name."""

    name: str  # file name (single-file kinds) or folder name shown in the dropdown
    repo_id: str
    files: tuple[RemoteFile, ...]
    revision: str = "main"
    size_note: str = ""  # human size for messages, e.g. "223 MB"

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


@dataclass(frozen=True)
class ModelKind:
    """A model family: its folder key, file extensions and default models."""

    kind: str  # ben2 | florence2 | llama_guard | image_guard
    folder_key: str  # ComfyUI model-folder key
    extensions: tuple[str, ...]  # file extensions listed in the dropdown; () for folder kinds
    defaults: tuple[DefaultModel, ...] = field(default_factory=tuple)
    label: str = ""

    @property
    def is_folder(self) -> bool:
        return not self.extensions

    def default(self, name: str) -> DefaultModel | None:
        return next((d for d in self.defaults if d.name == name), None)


BEN2 = ModelKind(
    kind="ben2",
    folder_key="ben2",
    extensions=(".onnx",),
    label="BEN2",
    defaults=(
        DefaultModel(
            name="BEN2_Base.onnx",
            repo_id="PramaLLC/BEN2",
            files=(
                RemoteFile(
                    "BEN2_Base.onnx",
                    size=222_932_053,
                    sha256="22cea62108ff53b7ccc20f7a008bf30494228d84b1687f29ecbe76936a998101",
                ),
            ),
            size_note="223 MB",
        ),
    ),
)

# Florence-2 in transformers' native layout (florence-community/*, the converted microsoft
# checkpoints). Only the files AutoProcessor + Florence2ForConditionalGeneration read: tokenizer.json
# carries the vocabulary, so vocab.json, merges.txt, added_tokens.json and special_tokens_map.json
# are left out. Revisions, sizes and sha256 values as published at those commits; the processor
# and tokenizer files are the same bytes in both repositories.
_FLORENCE2_SHARED = (
    RemoteFile("generation_config.json", 292, "0251459c49cc358ac033b5d4b8569e61ac22bde5d76be404b97a44cfb33fb12e"),
    RemoteFile("preprocessor_config.json", 603, "1396ec5a0a7adfe1c04fb777b09e8ba753be6dbb5868212ab3c3ef39d91fe031"),
    RemoteFile("processor_config.json", 2264, "cd0e3bf41a39b1276503fbd273bc03b9afc70d7a15ea681a92a1b4b77f858ee6"),
    RemoteFile("tokenizer.json", 3_748_144, "3ad7001f773409abe6bba33eac92662611a73d72f459bda2f00d2a221dd31ce4"),
    RemoteFile("tokenizer_config.json", 197_922, "cb5f80bd9afa767bb1bb798ee5f0a79eae45239b8e72506166b4218175a16723"),
)

FLORENCE2 = ModelKind(
    kind="florence2",
    folder_key="florence2",
    extensions=(),
    label="Florence-2",
    defaults=(
        DefaultModel(
            name="Florence-2-base",
            repo_id="florence-community/Florence-2-base",
            revision="00921df66db728a9ceb750f5eca43e5c203a2051",
            files=(
                RemoteFile("config.json", None, "2a4dfe9885d183da121f239ada734bd700ee6908b650a7a25ab32eb104fe1d7a"),
                RemoteFile("model.safetensors", 463_178_864, "62f3e696da74f8869a68ddb529a9b3e14eb25b21c592cb3dea6179bf944df6a0"),
                *_FLORENCE2_SHARED,
            ),
            size_note="467 MB",
        ),
        DefaultModel(
            name="Florence-2-large",
            repo_id="florence-community/Florence-2-large",
            revision="4271c66b88cdbc05735372ec13b2360108de5317",
            files=(
                RemoteFile("config.json", 2396, "8412483f687f2f71587328a38c6fa70a68d9488f28e90607be3c182641f60f2c"),
                RemoteFile("model.safetensors", 1_553_541_016, "7715423d6549bf1e71188bdd84f4ac960cc0597886af24a5ef7b66f128660685"),
                *_FLORENCE2_SHARED,
            ),
            size_note="1.56 GB",
        ),
    ),
)

KINDS: dict[str, ModelKind] = {BEN2.kind: BEN2, FLORENCE2.kind: FLORENCE2}


def register_kind(kind: ModelKind) -> ModelKind:
    """Add a model kind (each engine's module registers its own)."""
    KINDS[kind.kind] = kind
    return kind


# Llama Guard 3 as GGUF, in the `LLM` folder that other packs share (appended to, never replaced).
# QuantFactory's re-uploads are public (no licence gate); Meta's originals are gated. The 8B file's
# sha256 is the one its hub page publishes; the 1B file's is taken from the hub at download time.
LLAMA_GUARD = register_kind(
    ModelKind(
        kind="llama_guard",
        folder_key="LLM",
        extensions=(".gguf",),
        label="Llama Guard",
        defaults=(
            DefaultModel(
                name="Llama-Guard-3-8B.Q4_K_M.gguf",
                repo_id="QuantFactory/Llama-Guard-3-8B-GGUF",
                files=(
                    RemoteFile(
                        "Llama-Guard-3-8B.Q4_K_M.gguf",
                        sha256="c5ea8760a1e544eea66a8915fcc3fbd2c67357ea2ee6871a9e6a6c33b64d4981",
                    ),
                ),
                size_note="4.9 GB",
            ),
            DefaultModel(
                name="Llama-Guard-3-1B.Q4_K_M.gguf",
                repo_id="QuantFactory/Llama-Guard-3-1B-GGUF",
                files=(RemoteFile("Llama-Guard-3-1B.Q4_K_M.gguf"),),
                size_note="955 MB",
            ),
        ),
    )
)


# The image-level check: an NSFW image classifier in transformers' native ViT layout, one folder
# per model. Falconsai/nsfw_image_detection: ViT-B/16 at 224², labels normal/nsfw, Apache-2.0. Only
# the files ViTForImageClassification and the pack's own pre-processing read (never the pickled
# pytorch_model.bin or optimizer.pt). The weights' sha256 and size are the ones the hub publishes for
# the LFS file at that revision; the two small JSON files are pinned by size, their sha256 taken from
# the hub at download time.
IMAGE_GUARD = register_kind(
    ModelKind(
        kind="image_guard",
        folder_key="image_guard",
        extensions=(),
        label="Image Guard",
        defaults=(
            DefaultModel(
                name="nsfw_image_detection",
                repo_id="Falconsai/nsfw_image_detection",
                revision="4ea924a80cd71a53597a14eead839aff6942f2c9",
                files=(
                    RemoteFile("config.json", 724),
                    RemoteFile("preprocessor_config.json", 325),
                    RemoteFile(
                        "model.safetensors",
                        343_223_968,
                        "97b2ce64ec146884b37f98ee7944ca4891aa72f6827dc0cb10684a1cbecd5830",
                    ),
                ),
                size_note="343 MB",
            ),
        ),
    )
)


def get_kind(kind: str) -> ModelKind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None


def fetch_hint(kind: ModelKind, name: str, target: Path) -> str:
    """The commands and URL that put a default model in place."""
    default = kind.default(name)
    hint = f"run `python install.py --models {kind.kind}` or `cutout-guard download {kind.kind}`"
    if default is not None:
        files = ", ".join(f.filename for f in default.files)
        hint += f", or download {files} from {default.url} into {target}"
    else:
        hint += f", or put the model at {target}"
    return hint


# ----------------------------------------------------------------------------- locating


def list_models(kind: ModelKind, folders: list[Path]) -> list[str]:
    """Names found in ``folders`` (files with the kind's extensions, or sub-folders), defaults first."""
    names: list[str] = [d.name for d in kind.defaults]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.name.endswith(".tmp"):
                continue
            if kind.is_folder and entry.is_dir():
                names.append(entry.name)
            elif not kind.is_folder and entry.is_file() and entry.suffix.lower() in kind.extensions:
                names.append(entry.name)
    return list(dict.fromkeys(names))


def find_model(kind: ModelKind, name: str, folders: list[Path]) -> Path | None:
    """The first existing ``folder/name`` among ``folders``, or None."""
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ModelMissing(f"{kind.label} model name {name!r} must be a name inside the model folder")
    for folder in folders:
        candidate = folder / name
        if candidate.exists():
            return candidate
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or None (checks the header and the size)."""
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} has {size} bytes"
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > min(size - 8, 100_000_000):
            return f"{path.name} has a header of {header_len:,} bytes in a file of {size:,}"
        try:
            header = json.loads(handle.read(header_len))
        except ValueError:
            return f"{path.name} has an unreadable header"
    end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        return f"{path.name} is truncated: {size:,} bytes, its header needs {8 + header_len + end:,}"
    return None


# ----------------------------------------------------------------------------- lock files


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def lock_path(model_path: Path) -> Path:
    if model_path.is_dir():
        return model_path / FOLDER_LOCK
    return model_path.with_name(model_path.name + LOCK_SUFFIX)


def _stat_entry(path: Path, sha256: str) -> dict:
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_lock(model_path: Path, default: DefaultModel, revision: str | None, hashes: dict[str, str]) -> Path:
    """Record repo, revision and each file's hash beside (or inside) the model."""
    root = model_path if model_path.is_dir() else model_path.parent
    files = {}
    for rel, digest in hashes.items():
        file_path = root / rel if model_path.is_dir() else model_path
        files[rel] = _stat_entry(file_path, digest)
    lock = {"repo_id": default.repo_id, "revision": revision, "files": files}
    target = lock_path(model_path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(lock, indent=2) + "\n")
    os.replace(tmp, target)
    return target


def _corrupt(kind: ModelKind, path: Path, why: str) -> ModelCorrupt:
    hint = fetch_hint(kind, path.name, path)
    return ModelCorrupt(f"{kind.label} model {path} is damaged ({why}) — delete it and {hint}")


def verify(kind: ModelKind, model_path: Path) -> None:
    """Check a model against its lock file and any pinned size or hash; raise ModelCorrupt.

    Files without a lock are checked against the pinned values of the default model of the
    same name (and a lock is written when they match); other user files pass unchecked.
    """
    default = kind.default(model_path.name)
    lock_file = lock_path(model_path)
    root = model_path if model_path.is_dir() else model_path.parent

    def file_of(rel: str) -> Path:
        return root / rel if model_path.is_dir() else model_path

    if lock_file.is_file():
        try:
            lock = json.loads(lock_file.read_text())
            entries = lock["files"]
        except (ValueError, KeyError, TypeError):
            raise _corrupt(kind, model_path, f"unreadable lock file {lock_file.name}") from None
        changed = False
        for rel, entry in entries.items():
            path = file_of(rel)
            if not path.is_file():
                raise _corrupt(kind, model_path, f"{rel} is missing")
            st = path.stat()
            if st.st_size != entry.get("size"):
                raise _corrupt(kind, model_path, f"{rel} has {st.st_size:,} bytes, expected {entry.get('size'):,}")
            if st.st_mtime_ns != entry.get("mtime_ns"):
                digest = sha256_of(path)
                if digest != entry.get("sha256"):
                    raise _corrupt(kind, model_path, f"{rel} sha256 {digest} differs from the recorded one")
                entry["mtime_ns"] = st.st_mtime_ns
                changed = True
        if changed:
            lock_file.write_text(json.dumps(lock, indent=2) + "\n")
        return

    if default is None:
        return
    hashes = {}
    for remote in default.files:
        path = file_of(remote.filename)
        if not path.is_file():
            raise _corrupt(kind, model_path, f"{remote.filename} is missing")
        size = path.stat().st_size
        if remote.size is not None and size != remote.size:
            raise _corrupt(kind, model_path, f"{remote.filename} has {size:,} bytes, expected {remote.size:,}")
        if remote.sha256 is not None:
            digest = sha256_of(path)
            if digest != remote.sha256:
                raise _corrupt(kind, model_path, f"{remote.filename} sha256 {digest} differs from the published one")
            hashes[remote.filename] = digest
    if hashes and len(hashes) == len(default.files):
        write_lock(model_path, default, None, hashes)
