"""Shared fixtures: tiny models built on the fly, a local hub, an isolated models folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from hubserver import HubServer  # noqa: E402


@pytest.fixture
def hub(monkeypatch):
    """A local hub; huggingface_hub is pointed at it, Xet transfers off, no token."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty models folder used by the nodes outside ComfyUI."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("CUTOUT_GUARD_MODELS_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """A real ComfyUI started with --cpu and this pack installed; skipped without COMFYUI_DIR."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip("COMFYUI_DIR is not set: no real ComfyUI to test against")
    from comfyui_harness import ComfyUI

    server = ComfyUI(Path(comfy_dir), tmp_path_factory.mktemp("comfyui"), python=os.environ.get("COMFYUI_PYTHON"))
    try:
        yield server
    finally:
        server.close()
