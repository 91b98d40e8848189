"""Shared fixtures: tiny models built on the fly, a local hub, an isolated models folder."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from hubserver import HubServer  # noqa: E402

# Under CI (CI=true) what a test needs is installed by .ci/run, so a skip there means a missing
# install step: a skipped real-ComfyUI or comfy-cli test, or a test module that skips as a whole
# (a dependency it imports is missing), is reported as failed.
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1")
MUST_RUN_IN_CI = ("comfyui", "comfy_cli")


def _ci_failure(report, what: str) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"CI=true: {what} may not skip here ({reason}) — .ci/run installs what it needs"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        marker = next((m for m in MUST_RUN_IN_CI if item.get_closest_marker(m)), None)
        if marker:
            _ci_failure(report, f"a {marker} test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and isinstance(collector, pytest.Module):
        _ci_failure(report, f"test module {collector.path.name}")


PEAK = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)      # a Wednesday noon, UTC
OFF_PEAK = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)  # inside the default 22:00-07:00 window


@pytest.fixture(autouse=True)
def no_wall_clock(monkeypatch):
    """Routing depends on the hour (off-peak windows), so no test may route by the wall clock: a
    test pins the time (``now=``, ``--at``) or takes ``wall_clock`` (the clock set to an hour)."""
    from cutout_guard.router import policy

    def refuse():
        raise AssertionError("this test routed by the wall clock: pin the time (now=, --at) or use the "
                             "wall_clock fixture")

    monkeypatch.setattr(policy, "utc_now", refuse)


@pytest.fixture(params=[PEAK, OFF_PEAK], ids=["peak", "off-peak"])
def wall_clock(request, monkeypatch):
    """The router's wall clock stopped at a peak and at an off-peak hour (the test runs at both)."""
    from cutout_guard.router import policy

    monkeypatch.setattr(policy, "utc_now", lambda: request.param)
    return request.param


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


@pytest.fixture(scope="session")
def tiny_models(comfyui):
    """The tiny models in the real ComfyUI's model folders (comfyui_harness.TINY)."""
    from comfyui_harness import build_tiny_models

    build_tiny_models(comfyui.models_root)
    return comfyui.models_root


@pytest.fixture(scope="session")
def uploaded(comfyui, tmp_path_factory):
    """A photo uploaded to the real ComfyUI's input folder; its name there."""
    from photo import make_photo

    return comfyui.upload_image(make_photo(tmp_path_factory.mktemp("photo") / "photo.jpg"))
