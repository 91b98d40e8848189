"""Synthetic Llama Guard GGUFs for the tests, each built once per test session."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from devtools.synthetic.llama_guard import build_llama_guard

_ROOT = Path(tempfile.mkdtemp(prefix="cutout-guard-llama-guard-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def model(kind: str) -> Path:
    """``trigger`` (hand-set weights), ``tiny`` or ``small`` (random weights)."""
    if kind == "trigger":
        return build_llama_guard(_ROOT / "trigger.gguf", weights="trigger")
    return build_llama_guard(_ROOT / f"{kind}.gguf", shape=kind)
