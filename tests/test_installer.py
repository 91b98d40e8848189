"""install.py's decisions, on made-up machines and made-up installed-package views (nothing is installed)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from cutout_guard.install import installer as ins
from cutout_guard.install.installer import Installed, Machine, Request, Step

LLAMA = ins.LLAMA_CPP_VERSION
NO_GPU = Machine(platform="linux", compiler=True)
GPU = Machine(platform="linux", nvidia_smi=True, proc_driver=True, libcuda=True, driver_cuda=(12, 8), compiler=True, nvcc=True)


def env(machine: Machine, **values: str) -> Machine:
    return replace(machine, env={**machine.env, **values})


# ----------------------------------------------------------------------------- device


@pytest.mark.parametrize(
    "machine, flag, expected",
    [
        (NO_GPU, None, "cpu"),
        (GPU, None, "cuda"),
        (replace(NO_GPU, proc_driver=True, libcuda=True), None, "cuda"),  # driver loaded, nvidia-smi not on PATH
        (replace(NO_GPU, libcuda=True), None, "cpu"),  # a stub libcuda alone proves nothing
        (replace(GPU, platform="darwin"), None, "cpu"),
        (env(GPU, CUTOUT_GUARD_DEVICE="cpu"), None, "cpu"),  # building a CPU image on a GPU host
        (env(NO_GPU, CUTOUT_GUARD_DEVICE="cuda"), None, "cuda"),  # building a GPU image without a GPU
        (env(NO_GPU, CUTOUT_GUARD_DEVICE="GPU"), None, "cuda"),
        (env(NO_GPU, CUTOUT_GUARD_DEVICE="auto"), None, "cpu"),
        (env(GPU, CUTOUT_GUARD_DEVICE="cuda"), "cpu", "cpu"),  # the flag beats the variable
        (env(NO_GPU, CUTOUT_GUARD_DEVICE="cpu"), "cuda", "cuda"),
        (env(GPU, CUDA_VISIBLE_DEVICES=""), None, "cpu"),
        (env(GPU, CUDA_VISIBLE_DEVICES="-1"), None, "cpu"),
        (env(GPU, CUDA_VISIBLE_DEVICES="0"), None, "cuda"),
        (env(GPU, CUDA_VISIBLE_DEVICES="", CUTOUT_GUARD_DEVICE="cuda"), None, "cuda"),
        (env(GPU, CUTOUT_GUARD_BUILD="cpu"), None, "cpu"),  # the variable's name now
        (env(NO_GPU, CUTOUT_GUARD_BUILD="cuda", CUTOUT_GUARD_DEVICE="cpu"), None, "cuda"),  # the new name wins
    ],
)
def test_choose_build(machine, flag, expected):
    decision = ins.choose_build(machine, flag)
    assert decision.value == expected
    assert decision.why


def test_bad_device_value_names_the_choices():
    with pytest.raises(ValueError, match="cpu, cuda or auto"):
        ins.choose_build(env(NO_GPU, CUTOUT_GUARD_DEVICE="rocm"))


NVIDIA_SMI_SAMPLE = """\
Fri Nov 27 09:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 560.35.03              Driver Version: 560.35.03      CUDA Version: 12.6     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0 Off |                  Off |
|  0%   35C    P8             20W /  450W |       1MiB /  24564MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+
"""


def test_parse_nvidia_smi():
    assert ins.parse_nvidia_smi(NVIDIA_SMI_SAMPLE) == (True, (12, 6))
    assert ins.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == (False, None)


# ----------------------------------------------------------------------------- CUDA version and wheel index


@pytest.mark.parametrize(
    "machine, versions, expected",
    [
        (GPU, {"torch": "2.7.1+cu126"}, (12, 6)),
        (GPU, {"torch": "2.8.0+cu128"}, (12, 8)),
        (GPU, {"torch": "2.7.1", "nvidia-cuda-runtime-cu12": "12.4.127"}, (12, 4)),
        (replace(GPU, driver_cuda=(13, 0)), {"torch": "2.9.0", "nvidia-cuda-runtime": "13.0.48"}, (13, 0)),
        (GPU, {}, (12, 8)),  # only the driver
        (replace(GPU, driver_cuda=(12, 4)), {"torch": "2.7.1+cu126"}, (12, 4)),  # the driver caps it
        (env(NO_GPU, CUTOUT_GUARD_CUDA="12.6"), {}, (12, 6)),
        (NO_GPU, {"torch": "2.13.0+cpu"}, None),
    ],
)
def test_cuda_version(machine, versions, expected):
    assert ins.cuda_version(machine, Installed(versions)).value == expected


@pytest.mark.parametrize(
    "cuda, tag",
    [((12, 6), "cu125"), ((12, 5), "cu125"), ((12, 4), "cu124"), ((12, 1), "cu121"), ((12, 0), None), ((11, 8), "cu118"),
     ((11, 7), None), ((13, 0), "cu130"), ((13, 1), "cu130"), ((13, 2), "cu132"), ((13, 9), "cu132"), (None, None)],
)
def test_llama_wheel_tag_never_newer_than_the_runtime(cuda, tag):
    assert ins.llama_cuda_wheel_tag(cuda) == tag


# ----------------------------------------------------------------------------- onnxruntime


def _actions(steps):
    return [(s.action, s.target) for s in steps]


@pytest.mark.parametrize(
    "device, cuda, versions, expected",
    [
        ("cpu", None, {}, [("install", "onnxruntime>=1.20")]),
        ("cpu", None, {"onnxruntime": "1.32.0"}, []),
        ("cpu", None, {"onnxruntime": "1.16.3"}, [("install", "onnxruntime>=1.20")]),
        ("cpu", None, {"onnxruntime-gpu": "1.26.0"}, [("uninstall", "onnxruntime-gpu"), ("install", "onnxruntime>=1.20")]),
        # both present: they share files, so removing one breaks the other: both go, one comes back
        ("cpu", None, {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.26.0"},
         [("uninstall", "onnxruntime-gpu"), ("uninstall", "onnxruntime"), ("install", "onnxruntime>=1.20")]),
        ("cuda", (12, 6), {}, [("install", "onnxruntime-gpu>=1.20,<1.27")]),
        ("cuda", (12, 6), {"onnxruntime-gpu": "1.26.0"}, []),
        ("cuda", (12, 6), {"onnxruntime-gpu": "1.31.1"}, [("install", "onnxruntime-gpu>=1.20,<1.27")]),  # a CUDA 13 build
        ("cuda", (13, 0), {"onnxruntime-gpu": "1.26.0"}, [("install", "onnxruntime-gpu>=1.27")]),
        ("cuda", (13, 0), {"onnxruntime-gpu": "1.31.1"}, []),
        ("cuda", None, {}, [("install", "onnxruntime-gpu>=1.20,<1.27")]),
        ("cuda", (12, 6), {"onnxruntime": "1.32.0"}, [("uninstall", "onnxruntime"), ("install", "onnxruntime-gpu>=1.20,<1.27")]),
        ("cuda", (12, 6), {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.26.0"},
         [("uninstall", "onnxruntime"), ("uninstall", "onnxruntime-gpu"), ("install", "onnxruntime-gpu>=1.20,<1.27")]),
        ("cpu", None, {"onnxruntime": "1.32.0", "onnxruntime-directml": "1.20.0"}, [("warn", "onnxruntime-directml")]),
    ],
)
def test_plan_onnxruntime(device, cuda, versions, expected):
    assert _actions(ins.plan_onnxruntime(device, cuda, Installed(versions))) == expected


# ----------------------------------------------------------------------------- llama-cpp-python


def _llama(device, machine, versions=None, backend=None, request=Request(), cuda=(12, 6)):
    return ins.plan_llama(device, cuda if device == "cuda" else None, machine, Installed(versions or {}, backend), request)


def test_cpu_prebuilt_wheel_then_source_build():
    (step,) = _llama("cpu", NO_GPU)
    assert step.action == "install" and step.target == f"llama-cpp-python=={LLAMA}"
    assert step.pip == ("install", "--only-binary", "llama-cpp-python", "--extra-index-url",
                        f"{ins.LLAMA_WHEEL_INDEX}/cpu", f"llama-cpp-python=={LLAMA}")
    assert step.fallback.action == "build" and "--no-binary" in step.fallback.pip


def test_cuda_prebuilt_wheel_matches_torch_cuda_then_cuda_source_build():
    steps = _llama("cuda", GPU)
    (step,) = steps
    assert f"{ins.LLAMA_WHEEL_INDEX}/cu125" in step.pip
    assert step.fallback.action == "build"
    assert dict(step.fallback.env)["CMAKE_ARGS"] == "-DGGML_CUDA=on"


def test_source_builds_bypass_the_pip_wheel_cache():
    """pip caches a wheel built from the sdist without looking at CMAKE_ARGS: a CUDA build would
    silently reuse a cached CPU wheel. Source builds therefore run with --no-cache-dir."""
    for device, machine in (("cpu", NO_GPU), ("cuda", GPU)):
        build = _llama(device, machine)[-1].fallback
        assert "--no-cache-dir" in build.pip and "--no-binary" in build.pip


@pytest.mark.parametrize(
    "device, machine, versions, backend, expected",
    [
        ("cpu", NO_GPU, {"llama-cpp-python": LLAMA}, "cpu", []),
        ("cpu", NO_GPU, {"llama-cpp-python": LLAMA}, "metal", []),
        ("cuda", GPU, {"llama-cpp-python": LLAMA}, "cuda", []),
        # right version, wrong build: remove it first, or pip keeps it as "already satisfied"
        ("cpu", NO_GPU, {"llama-cpp-python": LLAMA}, "cuda", [("uninstall", "llama-cpp-python"), ("install", f"llama-cpp-python=={LLAMA}")]),
        ("cuda", GPU, {"llama-cpp-python": LLAMA}, "cpu", [("uninstall", "llama-cpp-python"), ("install", f"llama-cpp-python=={LLAMA}")]),
        # another version of the right build: pip replaces it
        ("cuda", GPU, {"llama-cpp-python": "0.3.30"}, "cuda", [("install", f"llama-cpp-python=={LLAMA}")]),
        ("cpu", NO_GPU, {"llama-cpp-python": "0.2.90"}, "cpu", [("install", f"llama-cpp-python=={LLAMA}")]),
    ],
)
def test_plan_llama_keeps_or_replaces(device, machine, versions, backend, expected):
    assert _actions(_llama(device, machine, versions, backend)) == expected


def test_no_cuda_wheel_builds_from_source():
    (step,) = _llama("cuda", GPU, cuda=(12, 0))
    assert step.action == "build" and "no prebuilt wheel for CUDA 12.0" in step.why
    assert dict(step.env)["CMAKE_ARGS"] == "-DGGML_CUDA=on"


@pytest.mark.parametrize(
    "device, machine, missing",
    [("cpu", replace(NO_GPU, compiler=False), "a C/C++ compiler"),
     ("cuda", replace(GPU, nvcc=False), "the CUDA toolkit (nvcc)"),
     ("cuda", replace(GPU, compiler=False, nvcc=False), "a C/C++ compiler and the CUDA toolkit (nvcc)")],
)
def test_without_compiler_the_fallback_is_a_clear_failure(device, machine, missing):
    (step,) = _llama(device, machine)
    assert step.fallback.action == "fail"
    assert missing in step.fallback.why and "build-essential" in step.fallback.why
    assert not step.fallback.pip


def test_llama_source_flag_and_user_cmake_args():
    machine = env(GPU, CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=89")
    (step,) = _llama("cuda", machine, request=Request(llama_source=True))
    assert step.action == "build" and step.fallback is None
    assert dict(step.env)["CMAKE_ARGS"] == "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89"
    (cpu,) = _llama("cpu", env(NO_GPU, CMAKE_ARGS="-DGGML_BLAS=ON"), request=Request(llama_source=True))
    assert dict(cpu.env)["CMAKE_ARGS"] == "-DGGML_BLAS=ON"


# ----------------------------------------------------------------------------- torch / transformers


@pytest.mark.parametrize(
    "versions, expected",
    [
        ({"torch": "2.7.1+cu126", "transformers": "4.57.1"}, []),
        ({"torch": "2.7.1+cu126", "transformers": "5.24.0"}, []),
        ({"torch": "2.7.1+cu126", "transformers": "4.53.2"}, [("install", "transformers>=4.56")]),
        ({"torch": "2.7.1+cu126"}, [("install", "transformers>=4.56")]),
        ({"transformers": "4.57.1"}, [("warn", "torch")]),
    ],
)
def test_plan_python_packages(versions, expected):
    assert _actions(ins.plan_python_packages(Installed(versions))) == expected


# ----------------------------------------------------------------------------- whole plans: converge, never touch torch


COMPLETE = {
    "cpu": Installed({"torch": "2.7.1+cu126", "transformers": "4.57.1", "onnxruntime": "1.32.0", "llama-cpp-python": LLAMA}, "cpu"),
    "cuda": Installed({"torch": "2.7.1+cu126", "transformers": "4.57.1", "onnxruntime-gpu": "1.26.0", "llama-cpp-python": LLAMA}, "cuda"),
}
STARTS = [
    Installed({"torch": "2.7.1+cu126"}),
    Installed({"torch": "2.7.1+cu126", "transformers": "4.51.0", "onnxruntime": "1.22.0", "onnxruntime-gpu": "1.31.1"}),
    Installed({"torch": "2.7.1+cu126", "transformers": "4.57.1", "llama-cpp-python": LLAMA}, "cuda"),
    Installed({"torch": "2.7.1+cu126", "transformers": "4.57.1", "llama-cpp-python": LLAMA}, "cpu"),
    Installed({"torch": "2.7.1+cu126", "onnxruntime-gpu": "1.18.0", "llama-cpp-python": "0.2.90"}, "cpu"),
    COMPLETE["cpu"],
    COMPLETE["cuda"],
]


def simulate(installed: Installed, steps: list[Step], device: str) -> Installed:
    """What the plan leaves behind, had every step succeeded (the first choice, not the fallback)."""
    versions, backend = dict(installed.versions), installed.llama_backend
    for step in steps:
        if step.action == "uninstall":
            versions.pop(step.target, None)
            if step.target == "llama-cpp-python":
                backend = None
        elif step.action in ("install", "build"):
            name, low = re.match(r"([a-z-]+)(?:==|>=)([\d.]+)", step.target).groups()
            versions[name] = low
            if name == "llama-cpp-python":
                index = next((a for a in step.pip if a.startswith(ins.LLAMA_WHEEL_INDEX)), "")
                cuda_build = "/cu" in index or "GGML_CUDA=on" in dict(step.env).get("CMAKE_ARGS", "")
                backend = "cuda" if cuda_build else "cpu"
    return Installed(versions, backend)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("start", STARTS, ids=range(len(STARTS)))
def test_plans_converge_and_the_second_plan_is_empty(device, start):
    machine = GPU if device == "cuda" else NO_GPU
    request = Request(build=device)
    _, first = ins.make_plan(machine, start, request)
    after = simulate(start, first, device)
    _, second = ins.make_plan(machine, after, request)
    assert ins.changes(second) == [], [s.describe() for s in second]
    # exactly one onnxruntime build and the right llama.cpp build afterwards
    ort = [p for p in ins.ORT_PACKAGES if after.has(p)]
    assert ort == (["onnxruntime-gpu"] if device == "cuda" else ["onnxruntime"])
    assert after.llama_backend == ("cuda" if device == "cuda" else "cpu")
    # torch is never installed, removed or changed
    for step in first:
        for s in (step, step.fallback):
            if s is not None:
                assert not any(re.match(r"torch\b", a) for a in s.pip), s.describe()
    assert after.version("torch") == start.version("torch")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_complete_environment_plans_nothing(device):
    machine = GPU if device == "cuda" else NO_GPU
    _, steps = ins.make_plan(machine, COMPLETE[device], Request(), present={("ben2", "BEN2_Base.onnx"): True})
    assert ins.changes(steps) == []


def test_models_only_leaves_packages_alone():
    _, steps = ins.make_plan(NO_GPU, Installed(), Request(models=(("ben2", "BEN2_Base.onnx"),), skip_packages=True))
    assert _actions(steps) == [("download", "ben2:BEN2_Base.onnx")]


def test_protected_pins_hold_torch_at_its_version():
    assert ins.protected_pins(Installed({"torch": "2.7.1+cu126", "torchvision": "0.22.1+cu126", "numpy": "2.1"})) == (
        "torch==2.7.1+cu126", "torchvision==0.22.1+cu126")


# ----------------------------------------------------------------------------- command line pieces


class _Kind:
    def __init__(self, *names):
        self.defaults = tuple(type("D", (), {"name": n})() for n in names)


KINDS = {"ben2": _Kind("BEN2_Base.onnx"), "florence2": _Kind("Florence-2-base", "Florence-2-large"), "empty": _Kind()}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ()),
        ("ben2", (("ben2", "BEN2_Base.onnx"),)),
        (" ben2 , florence2:Florence-2-large,ben2", (("ben2", "BEN2_Base.onnx"), ("florence2", "Florence-2-large"))),
        ("all", None),  # every kind; "empty" has no default, so this must fail
    ],
)
def test_parse_models(text, expected):
    if expected is None:
        with pytest.raises(ValueError, match="no default model"):
            ins.parse_models(text, KINDS)
    else:
        assert ins.parse_models(text, KINDS) == expected


@pytest.mark.parametrize("text, message", [("llama", "unknown model kind 'llama'"), ("florence2:huge", "no default model 'huge'")])
def test_parse_models_errors_name_the_choices(text, message):
    with pytest.raises(ValueError, match=message):
        ins.parse_models(text, KINDS)


def test_every_registered_kind_parses():
    from cutout_guard.core.models import KINDS as REAL

    pairs = ins.parse_models("all", REAL)
    assert [k for k, _ in pairs] == list(REAL)
    assert all(REAL[k].default(n) is not None for k, n in pairs)


def test_comfyui_root():
    assert ins.comfyui_root(Path("/x/ComfyUI/custom_nodes/cutout-guard"), None) == Path("/x/ComfyUI")
    assert ins.comfyui_root(Path("/x/ComfyUI/custom_nodes/cutout-guard"), "/y") == Path("/y")
    assert ins.comfyui_root(Path("/src/cutout-guard"), None) is None


def test_pip_argv_adds_constraints_to_installs_only_and_speaks_uv():
    pip = ["/py", "-m", "pip"]
    assert ins.pip_argv(pip, ("install", "x"), "/c.txt") == ["/py", "-m", "pip", "install", "x", "-c", "/c.txt"]
    assert ins.pip_argv(pip, ("uninstall", "-y", "x"), "/c.txt") == ["/py", "-m", "pip", "uninstall", "-y", "x"]
    uv = ["/usr/bin/uv", "pip"]
    assert ins.pip_argv(uv, ("uninstall", "-y", "x"), None, python="/py") == ["/usr/bin/uv", "pip", "--python", "/py", "uninstall", "x"]
    assert ins.pip_argv(uv, ("install", "--no-cache-dir", "x"), "/c", python="/py") == [
        "/usr/bin/uv", "pip", "--python", "/py", "install", "--no-cache", "x", "-c", "/c"]


# ----------------------------------------------------------------------------- carrying out (a fake pip)


def test_carry_out_falls_back_to_a_source_build_with_torch_pinned():
    calls = []

    def runner(argv, environ):
        constraints = argv[argv.index("-c") + 1] if "-c" in argv else None
        calls.append((argv, environ.get("CMAKE_ARGS"), Path(constraints).read_text() if constraints else None))
        return 1 if "--only-binary" in argv else 0  # no prebuilt wheel on the index

    installed = Installed({"torch": "2.7.1+cu126", "transformers": "4.57.1", "onnxruntime-gpu": "1.26.0"})
    _, steps = ins.make_plan(GPU, installed, Request())
    outcome = ins.carry_out(steps, installed=installed, runner=runner, launcher=["/py", "-m", "pip"])
    assert outcome.failed == []
    assert len(calls) == 2
    (first, _, pins), (second, cmake, _) = calls
    assert "--only-binary" in first and pins == "torch==2.7.1+cu126\n"
    assert "--no-binary" in second and cmake == "-DGGML_CUDA=on"


def test_carry_out_reports_a_failure_and_goes_on():
    calls = []
    installed = Installed({"torch": "2.7.1"})
    steps = [Step("fail", "llama-cpp-python==0.3.36", "no compiler"), Step("install", "onnxruntime>=1.20", "x", pip=("install", "onnxruntime>=1.20"))]
    outcome = ins.carry_out(steps, installed=installed, runner=lambda argv, e: calls.append(argv) or 0, launcher=["pip"])
    assert outcome.failed == ["llama-cpp-python==0.3.36"]
    assert len(calls) == 1 and "onnxruntime>=1.20" in calls[0]


# ----------------------------------------------------------------------------- summary


def test_summary_names_the_workflow_folder():
    text = ins.summary(ins.Decision("cuda", "nvidia-smi lists an NVIDIA GPU"), COMPLETE["cuda"], {("ben2", "BEN2_Base.onnx"): Path("/m/ben2/BEN2_Base.onnx")}, [])
    assert "workflows_gpu/ fits this machine" in text and "onnxruntime-gpu 1.26.0" in text and "/m/ben2/BEN2_Base.onnx" in text
    cpu_llama = Installed(dict(COMPLETE["cuda"].versions), "cpu")
    assert "n_gpu_layers to 0" in ins.summary(ins.Decision("cuda", "x"), cpu_llama, {}, [])
    text = ins.summary(ins.Decision("cpu", "no NVIDIA driver found"), Installed({}), {("ben2", "BEN2_Base.onnx"): None}, ["llama-cpp-python==0.3.36"])
    assert "workflows_cpu/ fits this machine" in text and "MISSING" in text and "FAILED" in text


def test_llama_backend_ignores_headers():
    """Every llama-cpp-python build installs include/ggml-cuda.h; only the libraries tell the build."""
    cpu = ["include/ggml-cuda.h", "include/ggml-metal.h", "llama_cpp/lib/libggml-cpu.so", "llama_cpp/lib/libllama.so"]
    assert ins.llama_backend_of(cpu) == "cpu"
    assert ins.llama_backend_of(cpu + ["llama_cpp/lib/libggml-cuda.so"]) == "cuda"
    assert ins.llama_backend_of(["llama_cpp\\lib\\ggml-cuda.dll"]) == "cuda"
    assert ins.llama_backend_of(["llama_cpp/lib/libggml-metal.dylib"]) == "metal"


INDEX_PAGE = (Path(__file__).resolve().parent / "data" / "whl" / "cpu" / "llama-cpp-python" / "index.html").read_text()


def test_the_wheel_index_page_is_read_for_wheel_names():
    names = ins.parse_wheel_index(INDEX_PAGE + '<a href="../other.tar.gz">x</a><a href="llama_cpp_python-0.3.36.tar.gz">src</a>')
    assert names[0] == "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl" and len(names) == 5  # wheels only, fragments cut


@pytest.mark.parametrize("name, machine, fits", [
    ("llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl", Machine(python=(3, 11)), True),
    ("llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl", Machine(python=(3, 12)), False),
    ("llama_cpp_python-0.3.36-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", Machine(python=(3, 11)), True),
    ("llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl", Machine(python=(3, 11), arch="arm64"), False),
    ("llama_cpp_python-0.3.36-cp311-cp311-linux_aarch64.whl", Machine(python=(3, 11), arch="arm64"), True),
    ("llama_cpp_python-0.3.36-cp312-cp312-win_amd64.whl", Machine(platform="win32", python=(3, 12)), True),
    ("llama_cpp_python-0.3.36-cp311-cp311-macosx_11_0_arm64.whl", Machine(platform="darwin", python=(3, 11), arch="arm64"), True),
    ("llama_cpp_python-0.3.36-cp311-cp311-macosx_11_0_arm64.whl", Machine(platform="darwin", python=(3, 11), arch="x86_64"), False),
])
def test_a_wheel_fits_by_python_abi_os_and_cpu(name, machine, fits):
    assert ins.wheel_fits(name, machine) is fits


def test_the_pinned_version_is_preferred_then_the_newest_usable_one():
    names = ins.parse_wheel_index(INDEX_PAGE)
    assert ins.pick_llama_version(names, Machine(python=(3, 11))) == ins.LLAMA_CPP_VERSION
    assert ins.pick_llama_version(names, Machine(python=(3, 12))) == "0.3.19"
    assert ins.pick_llama_version(names, Machine(python=(3, 13))) is None  # only 0.3.2, older than LLAMA_CPP_MIN


def test_with_the_index_read_the_plan_installs_what_exists_or_builds_saying_how_long():
    names = ins.parse_wheel_index(INDEX_PAGE)
    older = replace(NO_GPU, python=(3, 12), wheel_index={"cpu": names})
    (step,) = ins.plan_llama("cpu", None, older, Installed(), Request())
    assert step.action == "install" and step.target == "llama-cpp-python==0.3.19" and step.fallback.action == "build"
    assert "--only-binary" in step.pip and "llama-cpp-python==0.3.19" in step.pip
    # already installed at the version the index offers: nothing to do
    assert ins.plan_llama("cpu", None, older, Installed({"llama-cpp-python": "0.3.19"}, "cpu"), Request()) == []
    none = replace(NO_GPU, python=(3, 13), wheel_index={"cpu": names})
    (build,) = ins.plan_llama("cpu", None, none, Installed(), Request())
    assert build.action == "build" and "15–25 min" in build.why and "no prebuilt CPU wheel for cp313 linux x86_64" in build.why
    assert "-v" in build.pip  # the build's progress is streamed
    unread = replace(NO_GPU, python=(3, 13))  # index not read: the pinned wheel is tried, the build follows
    (tried,) = ins.plan_llama("cpu", None, unread, Installed(), Request())
    assert tried.target == f"llama-cpp-python=={ins.LLAMA_CPP_VERSION}" and tried.fallback.action == "build"


def test_the_index_is_read_from_a_folder_and_unreadable_tags_are_left_out(tmp_path):
    base = Path(__file__).resolve().parent / "data" / "whl"
    found = ins.read_wheel_index(str(base), ("cpu", "cu124", "cu121"))
    assert set(found) == {"cpu", "cu124"} and found["cu124"][0].startswith("llama_cpp_python-0.3.4-")
    assert ins.wheel_tags(Machine(driver_cuda=(12, 6))) == ("cpu", "cu125") and ins.wheel_tags(Machine()) == ("cpu",)


def test_a_mirror_index_is_the_one_pip_is_given(tmp_path):
    """Regression: install.py read $CUTOUT_GUARD_WHEEL_INDEX but the plan told pip to use the
    project's index, so a mirror's wheel was chosen and then looked for elsewhere."""
    base = Path(__file__).resolve().parent / "data" / "whl"
    machine = replace(NO_GPU, python=(3, 12), env={ins.WHEEL_INDEX_ENV: str(base)})
    machine = replace(machine, wheel_index=ins.read_wheel_index(ins.wheel_index_base(machine.env), ("cpu",)))
    (step,) = ins.plan_llama("cpu", None, machine, Installed(), Request())
    assert step.target == "llama-cpp-python==0.3.19"
    assert step.pip[step.pip.index("--extra-index-url") + 1] == f"{base.as_uri()}/cpu"


def test_the_index_folder_read_is_the_cuda_build_the_plan_chooses():
    """Regression: only the driver's CUDA was looked at, so a build for $CUTOUT_GUARD_CUDA (a Docker
    GPU build has no driver) or torch's CUDA never had its wheels read."""
    assert ins.wheel_tags(Machine(env={ins.CUDA_ENV: "12.4"})) == ("cpu", "cu124")
    assert ins.wheel_tags(Machine(), Installed({"torch": "2.7.1+cu121"})) == ("cpu", "cu121")
