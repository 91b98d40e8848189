"""Download a default model from the Hugging Face hub, checked, into a model folder.

Files go to a temporary folder beside the target and are renamed into place only when every
file has arrived and matched the hub's sha256 (and any pinned value), so an interrupted download
never leaves a half-written model under the real name. ``HF_ENDPOINT`` (read at call time),
``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are honoured.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import MissingDependency, ModelCorrupt, ModelMissing
from .models import DefaultModel, ModelKind, fetch_hint, sha256_of, write_lock

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# progress(done_bytes, total_bytes) — total may be 0 when unknown
Progress = Callable[[int, int], None]


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependency(
            "huggingface_hub is not installed — run `pip install huggingface_hub` "
            "(it is in the pack's requirements.txt)"
        ) from None
    return huggingface_hub


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _progress_class(progress: Progress | None, total: int):
    """A tqdm subclass that also reports to ``progress`` (the hub accepts a tqdm class)."""
    from tqdm.auto import tqdm

    if progress is None:
        return None
    state = {"offset": 0}

    class Reporting(tqdm):
        def update(self, n=1):
            result = super().update(n)
            progress(state["offset"] + int(self.n), total)
            return result

        def close(self):
            state["offset"] += int(self.n or 0)
            super().close()

    return Reporting


def download(
    kind: ModelKind,
    default: DefaultModel,
    folder: Path,
    *,
    progress: Progress | None = None,
) -> Path:
    """Fetch ``default`` into ``folder`` and return its path (a file, or a folder for folder kinds)."""
    hub = _hub()
    target = folder / default.name
    folder.mkdir(parents=True, exist_ok=True)
    failed = _failure(kind, default, folder, target)
    metas = _file_metadata(hub, default, failed)
    commit = next((m.commit_hash for m in metas.values() if m.commit_hash), None) or default.revision
    total = sum((m.size or 0) for m in metas.values())
    log.info("Downloading %s (%s) from %s@%s into %s", default.name, default.size_note or f"{total:,} bytes",
             default.repo_id, commit[:12], folder)

    staging = Path(tempfile.mkdtemp(prefix=f".{default.name}.", suffix=".tmp", dir=folder))
    try:
        hashes = _fetch_files(hub, kind, default, commit, staging, metas, failed, progress=progress, total=total)
        _install(kind, default, staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when a folder kind was moved into place
    write_lock(target, default, commit, hashes)
    log.info("Installed %s at %s", default.name, target)
    return target


def _failure(kind: ModelKind, default: DefaultModel, folder: Path, target: Path) -> Callable[[str], ModelMissing]:
    """Makes the error for a download that could not happen, naming the fix."""

    def failed(why: str) -> ModelMissing:
        return ModelMissing(
            f"{kind.label} model {target} is missing and could not be downloaded ({why}) — "
            f"{fetch_hint(kind, default.name, folder if not kind.is_folder else target)}"
        )

    return failed


def _file_metadata(hub, default: DefaultModel, failed: Callable[[str], ModelMissing]) -> dict:
    """The hub's revision, size and hash of each file, asked before anything is downloaded."""
    from huggingface_hub import errors as hub_errors

    endpoint, token = _endpoint(), os.environ.get("HF_TOKEN") or None
    metas = {}
    try:
        for remote in default.files:
            url = hub.hf_hub_url(default.repo_id, remote.filename, revision=default.revision, endpoint=endpoint)
            metas[remote.filename] = hub.get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except hub_errors.GatedRepoError:
        raise failed(
            f"{default.repo_id} is gated: accept its licence at {default.url} and set HF_TOKEN to a token "
            "that may read it"
        ) from None
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise failed(
                f"the hub refused access (HTTP {status}): accept the licence at {default.url} and set HF_TOKEN"
            ) from None
        raise failed(f"hub error: {exc}") from None
    except Exception as exc:  # offline, refused, DNS, TLS: the HTTP client's own error types vary
        raise failed(f"offline or unreachable: {type(exc).__name__}: {exc}") from None
    return metas


def _fetch_files(hub, kind: ModelKind, default: DefaultModel, commit: str, staging: Path, metas: dict,
                 failed: Callable[[str], ModelMissing], *, progress: Progress | None, total: int) -> dict[str, str]:
    """Download every file of ``default`` into ``staging``, each checked; ``{filename: sha256}``."""
    tqdm_class = _progress_class(progress, total)
    # huggingface_hub 0.x (which transformers 4.x pins) has no tqdm_class here: report per file
    options = {"tqdm_class": tqdm_class} if tqdm_class and _accepts(hub.hf_hub_download, "tqdm_class") else {}
    hashes: dict[str, str] = {}
    done = 0
    for remote in default.files:
        try:
            local = Path(hub.hf_hub_download(
                default.repo_id, remote.filename, revision=commit, local_dir=staging,
                token=os.environ.get("HF_TOKEN") or None, endpoint=_endpoint(), **options,
            ))
        except Exception as exc:  # broken transfers surface as the HTTP client's own errors
            raise failed(f"download of {remote.filename} failed: {type(exc).__name__}: {exc}") from None
        done += local.stat().st_size
        if progress is not None and not options:
            progress(done, total)
        hashes[remote.filename] = _checked(kind, remote, metas[remote.filename], local)
    return hashes


def _checked(kind: ModelKind, remote, meta, local: Path) -> str:
    """The sha256 of a downloaded file, after checking its size and hash against the pins and the hub."""
    size = local.stat().st_size
    digest = sha256_of(local)
    expected = [v for v in (remote.sha256, _etag_sha256(meta.etag)) if v]
    if (remote.size is not None and size != remote.size) or (meta.size is not None and size != meta.size):
        raise ModelCorrupt(
            f"{kind.label} download of {remote.filename} has {size:,} bytes, expected "
            f"{remote.size or meta.size:,} — nothing was installed; try again"
        )
    if any(digest != value for value in expected):
        raise ModelCorrupt(
            f"{kind.label} download of {remote.filename} has sha256 {digest}, expected "
            f"{expected[0]} — nothing was installed; try again"
        )
    if not expected:
        log.warning("%s: no sha256 known for %s; recorded %s", kind.label, remote.filename, digest)
    return digest


def _install(kind: ModelKind, default: DefaultModel, staging: Path, target: Path) -> None:
    """Rename the complete download into place (the folder itself for folder kinds)."""
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    if kind.is_folder:
        os.replace(staging, target)
    else:
        os.replace(staging / default.files[0].filename, target)


def _accepts(function, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _etag_sha256(etag: str | None) -> str | None:
    """An LFS file's ETag is its sha256; a small git file's ETag is a git hash and says nothing here."""
    if etag and SHA256_RE.match(etag.strip('"').lower()):
        return etag.strip('"').lower()
    return None


def download_folder(folders: list[Path]) -> Path:
    """Where a missing model is downloaded: the first folder that exists or can be made inside an
    existing folder other than the filesystem root; the first folder when none can.

    A folder whose whole path is missing down to ``/`` lies on a volume that is not mounted
    (``/runpod-volume/models/ben2`` on a worker without a network volume): writing there would put
    the model in the container's own layer under the volume's name, so the next folder is used.
    With the volume mounted, its folder comes first again (and is made when missing).
    """
    for folder in folders:
        existing = next((p for p in (folder.absolute(), *folder.absolute().parents) if p.is_dir()), None)
        if existing is not None and existing != Path(existing.anchor):
            return folder
    return folders[0]


def obtain(
    kind: ModelKind,
    name: str,
    folders: list[Path],
    *,
    allow_download: bool = True,
    progress: Progress | None = None,
) -> Path:
    """The verified path of model ``name``: found in ``folders``, or downloaded into :func:`download_folder`."""
    from .models import find_model, verify

    if not folders:
        raise ModelMissing(f"no model folder is configured for {kind.label} (key '{kind.folder_key}')")
    found = find_model(kind, name, folders)
    if found is not None:
        verify(kind, found)
        return found
    default = kind.default(name)
    into = download_folder(folders)
    target = into / name
    if default is None:
        searched = ", ".join(str(f) for f in folders)
        raise ModelMissing(
            f"{kind.label} model {name!r} not found in {searched} — put it at {target}, or choose "
            f"{kind.defaults[0].name if kind.defaults else 'another model'}"
        )
    if not allow_download or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelMissing(
            f"{kind.label} model {target} is missing and downloads are off — "
            f"{fetch_hint(kind, name, into if not kind.is_folder else target)}"
        )
    return download(kind, default, into, progress=progress)
