"""Under CI=true a real-ComfyUI (or comfy-cli) test that cannot run fails instead of skipping, and
so does a test module that skips as a whole; elsewhere both skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest

@pytest.mark.comfyui
def test_needs_comfyui():
    pytest.skip("COMFYUI_DIR is not set")

@pytest.mark.comfy_cli
def test_needs_comfy_cli():
    pytest.skip("no comfy")

def test_skips_for_its_own_reasons():
    pytest.skip("a GPU is present")

@pytest.mark.comfyui
@pytest.mark.xfail(reason="known", run=False)
def test_expected_to_fail():
    pass
'''

WHOLE_MODULE = '''
import pytest
pytest.importorskip("a_module_that_is_not_installed")

def test_never_collected():
    pass
'''


def run_sample(tmp_path: Path, source: str, ci: str | None) -> str:
    sample = tmp_path / "test_sample.py"
    sample.write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "COMFYUI_DIR")}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rfEs", "-c", os.devnull,
         "-W", "ignore::pytest.PytestUnknownMarkWarning", str(sample)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return done.stdout.strip().splitlines()[-1] + "\n" + done.stdout


@pytest.mark.parametrize("ci", [None])
def test_outside_ci_they_skip(tmp_path, ci):
    assert run_sample(tmp_path, SAMPLE, ci).startswith("3 skipped, 1 xfailed")
    assert run_sample(tmp_path, WHOLE_MODULE, ci).startswith("1 skipped")


@pytest.mark.parametrize("ci", ["true"])
def test_under_ci_they_fail(tmp_path, ci):
    out = run_sample(tmp_path, SAMPLE, ci)
    assert out.startswith("2 failed, 1 skipped, 1 xfailed"), out
    assert "CI=true: a comfyui test may not skip here (COMFYUI_DIR is not set)" in out
    assert "CI=true: a comfy_cli test may not skip here" in out
    out = run_sample(tmp_path, WHOLE_MODULE, ci)
    assert out.startswith("1 error"), out
    assert "CI=true: test module test_sample.py may not skip here" in out
