"""What ships, and that it works where it lands.

The three ways the pack leaves the repository — the Comfy Registry zip (``comfy node pack``), the
Docker images and the wheel (``pip wheel .``) — carry no developer tools (``devtools/``: the
synthetic model builders and the benchmarks), no tests and no Docker files. The wheel, installed
into a fresh virtual environment outside the checkout, runs its commands: ``--help`` of every
subcommand, ``submit`` (routing and its built-in workflows) and ``run`` on tiny models.

Everything is built from a copy of the working tree's files (tracked, and untracked but not
ignored — what the next commit holds), so nothing is written into the checkout.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from cutout_guard.core.report import read_png
from test_docker import _ignored, dockerfile, instructions

REPO = Path(__file__).resolve().parent.parent
NEVER_SHIPPED = ("devtools/", "tests/", "bench/", "docker/", ".ci/")
BUILDERS = ("def build_ben2", "def build_florence2", "def build_llama_guard", "def build_ben2_cost")


def run(command: list, **options) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **options)
    assert done.returncode == 0, f"{shlex.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The working tree's files in a fresh git repository, committed (``comfy node pack`` zips
    what git tracks)."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    root = tmp_path_factory.mktemp("tree") / "cutout-guard"
    for rel in filter(None, listed.split("\0")):
        source = REPO / rel
        if source.is_file():  # a file deleted in the working tree is still listed by --cached
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / rel)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "-c", "commit.gpgsign=false"]
    run([*git, "init", "-q"], cwd=root)
    run([*git, "add", "-A"], cwd=root)
    run([*git, "commit", "-q", "-m", "tree"], cwd=root)
    return root


def _python_files(names: list[str], read) -> dict[str, str]:
    return {name: read(name).decode("utf-8") for name in names if name.endswith(".py")}


def assert_no_developer_tools(paths: list[str], sources: dict[str, str], where: str) -> None:
    shipped = [p for p in paths if p.startswith(NEVER_SHIPPED) or "/devtools/" in p or "synthetic" in p]
    assert not shipped, f"{where} ships {shipped}"
    builders = [f"{name}: {b}" for name, text in sources.items() for b in BUILDERS if b + "(" in text]
    assert not builders, f"{where} holds synthetic model builders: {builders}"


# ----------------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # offline: no index, no isolated build environment (setuptools comes with the test extra)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", out, tree])
    (path,) = out.glob("cutout_guard-*.whl")
    return path


def test_the_wheel_holds_the_package_and_nothing_else(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = _python_files(names, archive.read)
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert {n.split("/")[0] for n in names} == {"cutout_guard", wheel.name.split("-py")[0] + ".dist-info"}
    assert_no_developer_tools(names, sources, wheel.name)
    assert not [n for n in names if n.split("/")[1:2] in (["devtools"], ["tests"])]
    # the router's built-in workflows are package data, the same files as the repository's
    for device in ("cpu", "gpu"):
        assert f"cutout_guard/router/workflows_{device}/cutout_caption_safety.api.json" in names
    assert "cutout_guard/workflows/specs.py" in names and "cutout_guard/app/cli.py" in names
    assert "cutout-guard = cutout_guard.app.cli:main" in entry_points


# ----------------------------------------------------------------------------- the Registry zip


@pytest.mark.comfy_cli
def test_comfy_node_pack_honours_comfyignore(tree):
    comfy = os.environ.get("COMFY_CLI") or shutil.which("comfy")
    if not comfy:
        pytest.skip("comfy-cli is not installed (pip install comfy-cli in a venv of its own; COMFY_CLI names it)")
    run([comfy, "--skip-prompt", "--no-enable-telemetry", "node", "pack"], cwd=tree)
    with zipfile.ZipFile(tree / "node.zip") as archive:
        names = archive.namelist()
        sources = _python_files(names, archive.read)
    assert_no_developer_tools(names, sources, "node.zip")
    tracked = run(["git", "ls-files"], cwd=tree).stdout.split()
    for path in ("__init__.py", "install.py", "pyproject.toml", "requirements.txt", "nodes/comfyui/ben2_nodes.py",
                 "workflows_cpu/cutout_caption_safety.api.json", "workflows_gpu/cutout_caption_safety.json",
                 "example_workflows/cutout.json", "web/cutout_guard.js"):
        assert path in names, f"node.zip is missing {path}"
    assert set(names) <= set(tracked)


# ----------------------------------------------------------------------------- the Docker images


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_docker_images_copy_no_developer_tools(flavour):
    """Every file the Dockerfile's COPY lines take from the build context (after its
    .dockerignore), read from the repository."""
    path = dockerfile(flavour)
    ignore = [line.strip() for line in (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert _ignored("devtools/synthetic/ben2.py", ignore) and _ignored("tests/conftest.py", ignore)
    copied = []
    for _, keyword, args in instructions(path):
        if keyword not in ("COPY", "ADD") or args.startswith("--from"):
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert not source.startswith(("devtools", "tests")), f"{path}: COPY {source}"
            found = [REPO / source] if (REPO / source).is_file() else [p for p in (REPO / source).rglob("*") if p.is_file()]
            copied += [str(p.relative_to(REPO)) for p in found if "__pycache__" not in p.parts]
    copied = [p for p in copied if not _ignored(p, ignore)]
    assert "nodes/app/cli.py" in copied
    sources = _python_files(copied, lambda p: (REPO / p).read_bytes())
    assert_no_developer_tools([p for p in copied if not p.startswith("docker/")], sources, f"docker/{flavour} image")


# ----------------------------------------------------------------------------- the installed wheel


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A venv outside the checkout with the wheel installed; its other packages (numpy, torch,
    the runtimes) are read from this test run's environment, which a ``.pth`` file adds after the
    install — plainly, so no editable install of the checkout there becomes active."""
    home = tmp_path_factory.mktemp("installed")
    venv = home / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel])
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    outer = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_test_environment.pth").write_text("".join(f"{p}\n" for p in outer))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CUTOUT_GUARD_", "RUNPOD_", "HF_"))}
    env.update({"PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"})
    work = home / "work"
    work.mkdir()
    return {"python": python, "cli": venv / "bin" / "cutout-guard", "env": env, "cwd": work, "site": site,
            "outer": [Path(p).resolve() for p in outer]}


def in_venv(installed: dict, *args, check: bool = True) -> subprocess.CompletedProcess:
    options = {"cwd": installed["cwd"], "env": installed["env"]}
    if check:
        return run(list(args), **options)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **options)


def test_the_installed_package_is_the_wheels(installed):
    code = ("import json, sys, cutout_guard, cutout_guard.router.policy as p; "
            "print(json.dumps({'file': cutout_guard.__file__, 'path': sys.path, "
            "'workflows': [str(e.workflow) for e in p.load_policy().endpoints.values()]}))")
    seen = json.loads(in_venv(installed, installed["python"], "-c", code).stdout)
    assert Path(seen["file"]).is_relative_to(installed["site"])
    # nothing of the checkout on the path, bar the test environment's own site-packages (which may
    # lie inside it, as .venv does) that the .pth file adds for numpy, torch and the runtimes
    checkout = [p for p in seen["path"] if p and Path(p).resolve().is_relative_to(REPO) and Path(p).resolve() not in installed["outer"]]
    assert checkout == []
    for device, workflow in zip(("cpu", "gpu"), seen["workflows"]):
        assert Path(workflow).is_relative_to(installed["site"])
        assert Path(workflow).read_bytes() == (REPO / f"workflows_{device}" / "cutout_caption_safety.api.json").read_bytes()


def test_every_subcommand_has_help(installed):
    top = in_venv(installed, installed["cli"], "--help").stdout
    for command in ("run", "download", "bench", "submit"):
        assert command in top
    assert "--unsafe-action" in in_venv(installed, installed["cli"], "run", "--help").stdout
    assert "--models-dir" in in_venv(installed, installed["cli"], "download", "--help").stdout
    assert "--route-only" in in_venv(installed, installed["cli"], "submit", "--help").stdout
    bench = in_venv(installed, installed["cli"], "bench", "--help", check=False)
    assert bench.returncode == 2 and "needs the developer tools (devtools/)" in bench.stderr  # they never ship


@pytest.mark.parametrize(("at", "rule"), [("2026-11-25T12:00", "free"), ("2026-11-25T23:30", "off-peak")])
def test_submit_routes_with_the_built_in_policy(installed, at, rule):
    done = in_venv(installed, installed["cli"], "submit", "photo.jpg", "--tier", "free", "--route-only", "--json",
                   "--at", at)
    printed = json.loads(done.stdout)
    assert printed["endpoint"] == "cpu" and printed["route"][0].startswith(f"rule '{rule}'")


def test_submit_sends_the_packaged_workflow(installed, tmp_path):
    """Past routing: the built-in workflow loads and the request goes out (to a port where
    nothing listens, so the answer is 'unreachable', exit 3 — not 'workflow file not found')."""
    from photo import make_photo

    image = make_photo(tmp_path / "photo.jpg", 48, 32)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    env = {**installed["env"], "RUNPOD_API_KEY": "k", "CUTOUT_GUARD_CPU_ENDPOINT_ID": "cpu-ep"}
    done = subprocess.run([str(installed["cli"]), "submit", str(image), "--tier", "free", "--at", "2026-11-25T12:00",
                           "--base-url", f"http://127.0.0.1:{closed}"],
                          cwd=installed["cwd"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "cpu endpoint unreachable" in done.stderr and "workflow" not in done.stderr


def test_run_on_tiny_models(installed, tmp_path):
    from devtools.synthetic.ben2 import build_ben2
    from devtools.synthetic.florence2 import build_florence2
    from devtools.synthetic.image_guard import build_image_guard
    from devtools.synthetic.llama_guard import build_llama_guard
    from photo import make_photo

    models = tmp_path / "tiny"
    build_ben2(models / "ben2" / "tiny.onnx", size=64)
    build_florence2(models / "florence2" / "tiny")
    build_llama_guard(models / "LLM" / "tiny.gguf")
    build_image_guard(models / "image_guard" / "tiny")
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(photos / "vase.jpg", 64, 48)
    out = tmp_path / "out"
    in_venv(installed, installed["cli"], "run", photos, "--out", out, "--models-dir", models, "--ben2", "tiny.onnx",
            "--florence2", "tiny", "--llama-guard", "tiny.gguf", "--image-guard", "tiny", "--max-new-tokens", "8", "--offline")
    (line,) = (out / "results.jsonl").read_text().splitlines()
    result = json.loads(line)
    assert result["file"].endswith("vase.jpg") and result["error"] is None
    assert result["verdict"] in ("safe", "unsafe") and result["caption"]
    assert read_png(out / "vase.png") == json.loads((out / "vase.json").read_text())   # the report, inside and beside


def test_regenerating_workflows_needs_a_folder_when_installed(installed, tmp_path):
    done = in_venv(installed, installed["python"], "-m", "cutout_guard.workflows", check=False)
    assert done.returncode == 2 and "installed, not in a checkout" in done.stderr
    in_venv(installed, installed["python"], "-m", "cutout_guard.workflows", tmp_path)
    assert (tmp_path / "workflows_cpu" / "cutout_caption_safety.api.json").read_bytes() == (
        REPO / "workflows_cpu" / "cutout_caption_safety.api.json").read_bytes()
