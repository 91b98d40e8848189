"""Comfy Registry / ComfyUI-Manager packaging: pyproject metadata, requirements, what gets published."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import cutout_guard
from cutout_guard.install import installer

REPO = Path(__file__).resolve().parent.parent

tomllib = pytest.importorskip("tomllib")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_project_metadata_is_complete_for_the_registry(pyproject):
    project = pyproject["project"]
    name = project["name"]
    # The registry's node id: < 100 characters, letters, digits, - _ ., no runs of specials,
    # starts with a letter, and (its advice) without "ComfyUI".
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", name), name
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["version"] == cutout_guard.__version__
    assert len(project["description"]) > 20
    assert project["license"] in ({"text": "MIT"}, {"file": "LICENSE"})
    assert project["requires-python"].startswith(">=")
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert (REPO / project["readme"]).is_file()


def test_tool_comfy_names_publisher_display_name_and_icon(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"].strip()
    icon = comfy["Icon"]
    assert re.fullmatch(r"https://\S+\.(svg|png|jpg|jpeg|gif)", icon), icon
    repo = pyproject["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo}/main/"
    assert icon.startswith(prefix), "the icon should be served from this repository"
    assert (REPO / icon.removeprefix(prefix)).is_file()


def _requirements(text: str) -> dict[str, str]:
    """normalized name -> the whole requirement without spaces (version and marker included)."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)
        out[installer.normalize(name)] = re.sub(r"\s+", "", line[len(name):]).replace('"', "'")
    return out


def test_requirements_txt_and_pyproject_dependencies_agree(pyproject):
    from_txt = _requirements((REPO / "requirements.txt").read_text())
    from_toml = _requirements("\n".join(pyproject["project"]["dependencies"]))
    assert from_txt == from_toml


def test_machine_specific_builds_are_left_to_install_py(pyproject):
    """Neither onnxruntime build, llama-cpp-python or torch is a plain requirement: the right build
    depends on the machine (install.py picks it) and ComfyUI owns torch."""
    names = set(_requirements((REPO / "requirements.txt").read_text()))
    assert not names & {"onnxruntime", "onnxruntime-gpu", "llama-cpp-python", "torch", "torchvision", "torchaudio"}


def test_install_py_and_requirements_ask_for_the_same_transformers():
    requirement = _requirements((REPO / "requirements.txt").read_text()).get("transformers")
    assert requirement is not None, "requirements.txt must list transformers (Florence-2 needs >= 4.56)"
    assert requirement == f">={installer.TRANSFORMERS_MIN}"


# ----------------------------------------------------------------------------- what is published


def _published(paths: list[str]) -> set[str]:
    pathspec = pytest.importorskip("pathspec")
    spec = pathspec.GitIgnoreSpec.from_lines((REPO / ".comfyignore").read_text().splitlines())
    return {p for p in paths if not spec.match_file(p)}


def _repo_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    assert tracked.returncode == 0, f"the published-files tests read `git ls-files`: {tracked.stderr.strip()}"
    return tracked.stdout.split()


def test_comfyignore_keeps_tests_tools_and_images_out():
    files = _repo_files() + ["tests/x.py", "docker/cpu/Dockerfile", "devtools/x.py", "samples/photo.jpg", "nodes/img.png",
                             "assets/icon.svg", "example_workflows/cutout.jpg"]
    published = _published(files)
    for path in published:
        assert not path.startswith(("tests/", "docker/", "devtools/", ".ci/", "samples/", "assets/")), path
        if path.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif", ".svg")):
            assert path.startswith("example_workflows/"), f"{path} would be published"
    assert "example_workflows/cutout.jpg" in published  # template thumbnails are part of the pack


def test_comfyignore_keeps_the_pack():
    files = _repo_files()
    published = _published(files + ["install.py", "__init__.py", "requirements.txt", "pyproject.toml", "nodes/install/installer.py"])
    for path in ("install.py", "__init__.py", "requirements.txt", "pyproject.toml", "nodes/install/installer.py"):
        assert path in published
    for path in files:
        if path.startswith(("nodes/", "workflows_cpu/", "workflows_gpu/", "example_workflows/", "web/")) and not path.endswith((".png", ".jpg", ".svg")):
            assert path in published, path
