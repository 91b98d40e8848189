"""What ``install.py`` does: look at the machine, decide what to install, then do it.

Deciding is pure. ``make_plan(machine, installed, request)`` turns a :class:`Machine` (GPU
evidence, CUDA version, compilers), an :class:`Installed` view (distribution name -> version,
and which llama.cpp backend the installed llama-cpp-python was built with) and a
:class:`Request` (the command line) into a list of :class:`Step`. Looking
(:func:`look_at_machine`, :func:`installed_packages`) and acting (:func:`carry_out`) are the
only parts that touch the system, so every decision is tested on made-up machines.

The rules:

- exactly one of ``onnxruntime`` / ``onnxruntime-gpu`` (both in one environment break the CUDA
  provider). They share the ``onnxruntime/`` folder, so removing one damages the other: when both
  are present, both go and the right one is installed afresh.
- ``onnxruntime-gpu`` on PyPI is built for CUDA 12 + cuDNN 9 up to 1.26 and for CUDA 13 from 1.27
  (checked against each wheel's ``libcudart`` dependency), so the version range follows the CUDA
  major of the environment.
- llama-cpp-python at :data:`LLAMA_CPP_VERSION`, the CPU or the CUDA build, never both: a
  prebuilt wheel from the project's own wheel index where one is published, else a source build
  (``CMAKE_ARGS=-DGGML_CUDA=on`` for CUDA), which needs a compiler and says so when none is found.
- torch is never installed or changed (every pip call runs with the installed torch pinned);
  transformers only ever goes up, to :data:`TRANSFORMERS_MIN`, never down.
- nothing happens twice: a second plan on a complete environment is empty.

ComfyUI-Manager runs install.py with ComfyUI's Python before anything is known to be importable,
so this module imports only the standard library (the model steps import the pack's own
``models`` and ``download`` modules when they run).
"""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..core.vocab import BUILDS as BUILDS_AND_AUTO, LLAMA_SOURCE_BUILD_MINUTES, LLAMA_SOURCE_COMMAND

log = logging.getLogger(__name__)

LLAMA_CPP_VERSION = "0.3.36"
LLAMA_CPP_MIN = "0.3.4"  # the oldest release with Llama 3.1 support and prebuilt CUDA 12 wheels
LLAMA_WHEEL_INDEX = "https://abetlen.github.io/llama-cpp-python/whl"
# CUDA toolkits llama-cpp-python publishes wheels for (one index per toolkit, e.g. .../whl/cu125).
LLAMA_CUDA_WHEELS: tuple[tuple[int, int], ...] = ((11, 8), (12, 1), (12, 2), (12, 3), (12, 4), (12, 5), (13, 0), (13, 2))

ONNXRUNTIME_MIN = "1.20"
# onnxruntime-gpu on PyPI: <= 1.26 needs libcudart.so.12 + cuDNN 9, >= 1.27 needs libcudart.so.13.
ONNXRUNTIME_GPU_FOR_CUDA = {12: ("1.20", "1.27"), 13: ("1.27", None)}
ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu")
# Other builds that install the same ``onnxruntime`` module (reported, never removed).
ORT_OTHER_BUILDS = ("onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-rocm", "onnxruntime-silicon")

TRANSFORMERS_MIN = "4.56"  # Florence2ForConditionalGeneration
PROTECTED = ("torch", "torchvision", "torchaudio")  # pinned to what is installed during every pip call

BUILD_ENV = "CUTOUT_GUARD_BUILD"  # cpu | cuda | auto (vocab.BUILDS)
OLD_BUILD_ENV = "CUTOUT_GUARD_DEVICE"  # its name before; still read
CUDA_ENV = "CUTOUT_GUARD_CUDA"  # e.g. 12.6: the CUDA version to build for when nothing can be detected
BUILDS = tuple(b for b in BUILDS_AND_AUTO if b != "auto")  # cpu | cuda
WORKFLOWS = {"cpu": "workflows_cpu", "cuda": "workflows_gpu"}

Version = tuple[int, ...]


# ----------------------------------------------------------------------------- versions


def parse_version(text: str | None) -> Version | None:
    """``"2.7.1+cu126"`` -> ``(2, 7, 1)``; the numeric release part only."""
    if not text:
        return None
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def at_least(version: str | None, minimum: str) -> bool:
    have, want = parse_version(version), parse_version(minimum)
    return have is not None and want is not None and _pad(have) >= _pad(want)


def below(version: str | None, limit: str) -> bool:
    have, want = parse_version(version), parse_version(limit)
    return have is not None and want is not None and _pad(have) < _pad(want)


def _pad(v: Version, n: int = 4) -> Version:
    return v + (0,) * (n - len(v))


def normalize(name: str) -> str:
    """PEP 503 name: ``Llama_CPP.python`` -> ``llama-cpp-python``."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ----------------------------------------------------------------------------- what is there


@dataclass(frozen=True)
class Machine:
    """What the installer knows about the computer (gathered by :func:`look_at_machine`)."""

    platform: str = "linux"  # sys.platform
    nvidia_smi: bool = False  # nvidia-smi ran and listed a GPU
    proc_driver: bool = False  # /proc/driver/nvidia/version exists (the Linux driver is loaded)
    libcuda: bool = False  # the CUDA driver library (libcuda / nvcuda) can be found
    driver_cuda: Version | None = None  # "CUDA Version" nvidia-smi reports: the newest the driver runs
    compiler: bool = False  # a C/C++ compiler is on PATH
    nvcc: bool = False  # the CUDA compiler is on PATH or in CUDA_HOME / /usr/local/cuda
    python: Version = (3, 12)
    env: Mapping[str, str] = field(default_factory=dict)  # the variables the decisions read
    arch: str = "x86_64"  # the CPU architecture wheels are built for: x86_64 | arm64 (aarch64)
    # wheel file names the llama-cpp-python index lists, per index folder ("cpu", "cu124"); None where
    # it was not read (then the pinned version's wheel is tried and a source build follows if pip finds none)
    wheel_index: Mapping[str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Installed:
    """Installed distributions (normalized name -> version) and llama-cpp-python's backend."""

    versions: Mapping[str, str] = field(default_factory=dict)
    llama_backend: str | None = None  # cuda | cpu | metal | vulkan | hip, None when not installed/unknown

    def version(self, name: str) -> str | None:
        return self.versions.get(normalize(name))

    def has(self, name: str) -> bool:
        return normalize(name) in self.versions


_BACKEND_LIBRARY = re.compile(r"(?:^|[/\\])(?:lib)?ggml-(cuda|metal|vulkan|hip)\.(?:so|dll|dylib)\b")


def llama_backend_of(files: Sequence[str]) -> str:
    """The GPU backend a llama-cpp-python build carries, from its installed shared libraries.

    Only libraries count: every build installs the headers of all backends (include/ggml-cuda.h).
    """
    for f in files:
        match = _BACKEND_LIBRARY.search(f.lower())
        if match:
            return match.group(1)
    return "cpu"


def installed_packages() -> Installed:
    """The distributions importable by this Python (re-read from disk on every call)."""
    importlib.invalidate_caches()
    versions: dict[str, str] = {}
    backend = None
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        versions.setdefault(normalize(name), dist.version)
        if normalize(name) == "llama-cpp-python" and backend is None:
            files = [str(f) for f in (dist.files or [])]
            backend = llama_backend_of(files) if files else None
    return Installed(versions, backend)


def _nvidia_smi() -> tuple[bool, Version | None]:
    candidates = [shutil.which("nvidia-smi"), "/usr/lib/wsl/lib/nvidia-smi"]
    exe = next((c for c in candidates if c and os.path.isfile(c)), None)
    if exe is None:
        return False, None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False, None
    if out.returncode != 0:
        return False, None
    return parse_nvidia_smi(out.stdout)


def parse_nvidia_smi(text: str) -> tuple[bool, Version | None]:
    """(a GPU is listed, the driver's CUDA version) from plain ``nvidia-smi`` output."""
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", text)
    has_gpu = bool(re.search(r"\|\s+\d+\s+\S.*\|", text)) or "MiB" in text
    return has_gpu, parse_version(cuda.group(1)) if cuda else None


def _has_libcuda(platform: str) -> bool:
    if platform == "win32":
        return ctypes.util.find_library("nvcuda") is not None
    if ctypes.util.find_library("cuda") is not None:
        return True
    return any(Path(p).exists() for p in ("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"))


def _has_nvcc() -> bool:
    if shutil.which("nvcc"):
        return True
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    return any(h and (Path(h) / "bin" / "nvcc").exists() for h in homes)


def look_at_machine() -> Machine:
    """Gather the facts :func:`make_plan` decides on (runs nvidia-smi; nothing is changed)."""
    smi, driver_cuda = _nvidia_smi()
    env_keys = (BUILD_ENV, OLD_BUILD_ENV, CUDA_ENV, "CUDA_VISIBLE_DEVICES", "CMAKE_ARGS", WHEEL_INDEX_ENV)
    return Machine(
        platform=sys.platform,
        nvidia_smi=smi,
        proc_driver=Path("/proc/driver/nvidia/version").exists(),
        libcuda=_has_libcuda(sys.platform),
        driver_cuda=driver_cuda,
        compiler=any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl")),
        nvcc=_has_nvcc(),
        python=sys.version_info[:2],
        env={k: os.environ[k] for k in env_keys if k in os.environ},
        arch=_arch(),
    )


def _arch() -> str:
    import platform

    name = platform.machine().lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(name, name)


# ----------------------------------------------------------------------------- the wheel index

STRICT_ENV = "CUTOUT_GUARD_INSTALL_STRICT"  # "1": any failed step fails install.py (the Dockerfiles set it)
WHEEL_INDEX_ENV = "CUTOUT_GUARD_WHEEL_INDEX"  # another llama-cpp-python wheel index (URL or folder), e.g. a mirror
_WHEEL_FILE = re.compile(r"llama_cpp_python-(?P<version>[0-9][^-]*)-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$")


def wheel_index_base(env: Mapping[str, str]) -> str:
    """The wheel index read and handed to pip: ``$CUTOUT_GUARD_WHEEL_INDEX`` (a URL, or a folder as a
    ``file:`` URL pip can use too), else the project's."""
    given = env.get(WHEEL_INDEX_ENV, "").rstrip("/")
    return _index_url(given) if given else LLAMA_WHEEL_INDEX


def _index_url(base: str) -> str:
    return base if "://" in base else Path(base).resolve().as_uri()


def parse_wheel_index(html: str) -> tuple[str, ...]:
    """The wheel file names a PEP 503 project page links to (``llama_cpp_python-0.3.36-cp311-…whl``)."""
    from urllib.parse import unquote

    names = []
    for href in re.findall(r'href=["\']([^"\']+)["\']', html):
        name = unquote(href.split("#", 1)[0].rsplit("/", 1)[-1])
        if _WHEEL_FILE.match(name):
            names.append(name)
    return tuple(dict.fromkeys(names))


def read_wheel_index(base: str, tags: Sequence[str], *, timeout: float = 15.0) -> dict[str, tuple[str, ...]]:
    """``{tag: wheel names}`` read from ``<base>/<tag>/llama-cpp-python/`` (a URL or a local folder);
    tags whose page cannot be read are left out (the plan then falls back on pip's own search)."""
    import urllib.request

    found = {}
    base = _index_url(base)
    for tag in tags:
        where = f"{base}/{tag}/llama-cpp-python/"
        try:
            if where.startswith("file:"):  # a folder: its index.html, as a static server would serve it
                where += "index.html"
            with urllib.request.urlopen(where, timeout=timeout) as response:
                html = response.read().decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            log.info("  could not read the wheel index %s (%s): pip will look for the wheel itself", where, exc)
            continue
        found[tag] = parse_wheel_index(html)
    return found


def wheel_fits(name: str, machine: Machine) -> bool:
    """Whether pip would install this wheel file on ``machine`` (CPython version, ABI, OS and CPU)."""
    match = _WHEEL_FILE.match(name)
    if not match:
        return False
    cp = "cp{}{}".format(*machine.python[:2])
    if cp not in match["python"].split(".") and not (match["abi"] == "abi3" and match["python"].startswith("cp3")):
        return False
    if match["abi"] not in (cp, "abi3", "none"):
        return False
    platforms = match["platform"].split(".")
    if machine.platform == "linux":
        return any(p.startswith(("manylinux", "linux")) and p.endswith(machine.arch if machine.arch != "arm64" else "aarch64") for p in platforms)
    if machine.platform == "win32":
        return "win_amd64" in platforms and machine.arch == "x86_64"
    if machine.platform == "darwin":
        return any(p.startswith("macosx") and (p.endswith(machine.arch) or p.endswith("universal2")) for p in platforms)
    return False


def pick_llama_version(names: Sequence[str], machine: Machine) -> str | None:
    """The pinned version when the index has a wheel of it for ``machine``, else the newest fitting
    one not older than ``LLAMA_CPP_MIN``; None when no wheel fits."""
    versions = {_WHEEL_FILE.match(n)["version"] for n in names if wheel_fits(n, machine)}
    usable = [v for v in versions if at_least(v, LLAMA_CPP_MIN)]
    if LLAMA_CPP_VERSION in usable:
        return LLAMA_CPP_VERSION
    return max(usable, key=lambda v: _pad(parse_version(v))) if usable else None


# ----------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    value: object
    why: str


def choose_build(machine: Machine, override: str | None = None) -> Decision:
    """``cpu`` or ``cuda``: the ``--build`` flag, then $CUTOUT_GUARD_BUILD ($CUTOUT_GUARD_DEVICE, its
    old name), then the driver."""
    settings = (("--build", override), (BUILD_ENV, machine.env.get(BUILD_ENV)), (OLD_BUILD_ENV, machine.env.get(OLD_BUILD_ENV)))
    for source, value in settings:
        value = (value or "").strip().lower()
        if value in ("", "auto"):
            continue
        if value == "gpu":
            value = "cuda"
        if value not in BUILDS:
            raise ValueError(f"{source}={value!r}: use cpu, cuda or auto")
        return Decision(value, f"set by {source}")
    visible = machine.env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return Decision("cpu", f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    if machine.platform == "darwin":
        return Decision("cpu", "macOS has no CUDA")
    if machine.nvidia_smi:
        return Decision("cuda", "nvidia-smi lists an NVIDIA GPU")
    if machine.proc_driver and machine.libcuda:
        return Decision("cuda", "the NVIDIA driver is loaded and libcuda is present")
    if machine.libcuda:
        return Decision("cpu", "libcuda is present but no NVIDIA driver answers (nvidia-smi failed, no /proc/driver/nvidia)")
    return Decision("cpu", "no NVIDIA driver found")


def cuda_version(machine: Machine, installed: Installed) -> Decision:
    """The CUDA version to install GPU builds for: $CUTOUT_GUARD_CUDA, else torch's, else the driver's.

    torch's CUDA is what the environment's CUDA libraries are (a pip torch brings them); the
    driver's version is the newest CUDA it can run, so it caps the choice when both are known.
    """
    forced = parse_version(machine.env.get(CUDA_ENV))
    if forced and len(forced) >= 2:
        return Decision(forced[:2], f"set by {CUDA_ENV}")
    torch_cuda, source = None, ""
    label = re.search(r"\+cu(\d+)(\d)$", installed.version("torch") or "")
    if label:
        torch_cuda, source = (int(label.group(1)), int(label.group(2))), "torch's build label"
    else:
        for dist in ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu11", "nvidia-cuda-runtime"):
            v = parse_version(installed.version(dist))
            if v and len(v) >= 2:
                torch_cuda, source = v[:2], f"the installed {dist}"
                break
    driver = machine.driver_cuda[:2] if machine.driver_cuda else None
    if torch_cuda and driver and driver < torch_cuda:
        return Decision(driver, f"the driver runs at most CUDA {_dotted(driver)} (torch has {_dotted(torch_cuda)})")
    if torch_cuda:
        return Decision(torch_cuda, source)
    if driver:
        return Decision(driver, "the driver (nvidia-smi)")
    return Decision(None, "unknown")


def _dotted(v: Version | None) -> str:
    return ".".join(str(p) for p in v) if v else "?"


def llama_cuda_wheel_tag(cuda: Version | None) -> str | None:
    """The newest published wheel toolkit with the same major and no newer minor: 12.6 -> ``cu125``."""
    if not cuda:
        return None
    fits = [t for t in LLAMA_CUDA_WHEELS if t[0] == cuda[0] and t <= tuple(cuda[:2])]
    return "cu{}{}".format(*max(fits)) if fits else None


@dataclass(frozen=True)
class Step:
    """One thing to do. ``pip`` holds pip's arguments (the launcher is added when it runs)."""

    action: str  # uninstall | install | build | download | verify | warn | fail
    target: str  # a package requirement or a model "kind:name"
    why: str
    pip: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # extra environment for the pip call
    fallback: "Step | None" = None  # tried when this step fails (prebuilt wheel -> source build)

    def describe(self) -> str:
        env = " ".join(f"{k}={v!r}" for k, v in self.env)
        text = f"{self.action} {self.target} — {self.why}"
        if self.pip:
            text += f"\n      pip {' '.join(self.pip)}" + (f"   [{env}]" if env else "")
        if self.fallback is not None:
            text += "\n    if that fails: " + self.fallback.describe().replace("\n", "\n  ")
        return text


@dataclass(frozen=True)
class Request:
    """What the command line asked for."""

    build: str | None = None  # --build
    models: tuple[tuple[str, str], ...] = ()  # (kind, model name) pairs from --models
    llama_source: bool = False  # --llama-source: build llama-cpp-python even where a wheel exists
    skip_packages: bool = False  # --models-only


def onnxruntime_requirement(device: str, cuda: Version | None) -> tuple[str, str, str | None]:
    """(package, minimum, upper bound or None) for the device and CUDA major."""
    if device != "cuda":
        return "onnxruntime", ONNXRUNTIME_MIN, None
    low, high = ONNXRUNTIME_GPU_FOR_CUDA.get(cuda[0] if cuda else 12, ONNXRUNTIME_GPU_FOR_CUDA[12])
    return "onnxruntime-gpu", low, high


def _spec(package: str, low: str, high: str | None) -> str:
    return f"{package}>={low}" + (f",<{high}" if high else "")


def plan_onnxruntime(device: str, cuda: Version | None, installed: Installed) -> list[Step]:
    want, low, high = onnxruntime_requirement(device, cuda)
    other = next(p for p in ORT_PACKAGES if p != want)
    steps: list[Step] = []
    have = installed.version(want)
    if installed.has(other):
        steps.append(Step("uninstall", other, f"{device} uses {want}; both in one environment break the CUDA provider",
                          pip=("uninstall", "-y", other)))
        if have is not None:
            steps.append(Step("uninstall", want, f"{other} and {want} share files, so removing {other} damaged it: reinstall",
                              pip=("uninstall", "-y", want)))
            have = None
    fits = have is not None and at_least(have, low) and (high is None or below(have, high))
    if not fits:
        why = f"not installed" if have is None else f"{have} is outside {low}..{high or ''}"
        if device == "cuda":
            why += f" (CUDA {cuda[0] if cuda else 12} build)"
        spec = _spec(want, low, high)
        steps.append(Step("install", spec, why, pip=("install", spec)))
    for name in ORT_OTHER_BUILDS:
        if installed.has(name):
            steps.append(Step("warn", name, f"{name} also installs the onnxruntime module; remove it if BEN2 fails to load"))
    return steps


def _cmake_args(base: str, machine: Machine) -> str:
    extra = machine.env.get("CMAKE_ARGS", "").strip()
    return " ".join(a for a in (base, extra) if a)


def plan_llama(device: str, cuda: Version | None, machine: Machine, installed: Installed, request: Request) -> list[Step]:
    pin = f"llama-cpp-python=={LLAMA_CPP_VERSION}"
    have = installed.version("llama-cpp-python")
    backend = installed.llama_backend
    right_backend = backend == "cuda" if device == "cuda" else backend not in ("cuda", None)
    tag = llama_cuda_wheel_tag(cuda) if device == "cuda" else "cpu"
    listed = None if machine.wheel_index is None or tag is None else machine.wheel_index.get(tag)  # None: index not read
    offered = None if listed is None else pick_llama_version(listed, machine)  # None: not read, or no wheel fits
    if have is not None and right_backend and parse_version(have) in (parse_version(LLAMA_CPP_VERSION), parse_version(offered or "")):
        return []  # the pinned version, or the one the index offers this machine instead
    steps: list[Step] = []
    if have is not None and not right_backend:
        steps.append(Step("uninstall", "llama-cpp-python",
                          f"the installed {have} is a {backend or 'unknown'} build; {device} needs the {device} build",
                          pip=("uninstall", "-y", "llama-cpp-python")))

    slow = f" — takes {LLAMA_SOURCE_BUILD_MINUTES} min on 2 cores; pip's build output follows"
    build_pip = ("install", "-v", "--no-binary", "llama-cpp-python", "--no-cache-dir", pin)  # -v streams the build's progress
    if device == "cuda":
        source = Step("build", pin, "from source for CUDA" + slow, env=(("CMAKE_ARGS", _cmake_args("-DGGML_CUDA=on", machine)),),
                      pip=build_pip)
        missing = [what for what, ok in (("a C/C++ compiler", machine.compiler), ("the CUDA toolkit (nvcc)", machine.nvcc)) if not ok]
    else:
        source = Step("build", pin, "from source for the CPU" + slow,
                      env=(("CMAKE_ARGS", _cmake_args("", machine)),) if machine.env.get("CMAKE_ARGS") else (), pip=build_pip)
        missing = [] if machine.compiler else ["a C/C++ compiler"]
    if missing:
        source = Step("fail", pin, _no_compiler_message(device, missing, cuda))

    prebuilt_ok = machine.platform in ("linux", "win32") or (device == "cpu" and machine.platform == "darwin")
    if request.llama_source or tag is None or not prebuilt_ok:
        if device == "cuda" and tag is None and not request.llama_source:
            source = replace(source, why=source.why + f" (no prebuilt wheel for CUDA {_dotted(cuda)})")
        steps.append(source)
        return steps
    index = f"{wheel_index_base(machine.env)}/{tag}"
    label = f"CUDA {tag[2:-1]}.{tag[-1]}" if device == "cuda" else "CPU"
    version = LLAMA_CPP_VERSION if listed is None else offered
    if version is None:  # the index was read and has no wheel for this Python / OS / CPU
        what = f"cp{machine.python[0]}{machine.python[1]} {machine.platform} {machine.arch}"
        steps.append(replace(source, why=source.why + f" (no prebuilt {label} wheel for {what} on {index})"))
        return steps
    why = f"prebuilt {label} wheel from {index}"
    if version != LLAMA_CPP_VERSION:
        why += f" ({LLAMA_CPP_VERSION} has no wheel for this machine there; {version} is the newest that fits)"
    wheel_pin = f"llama-cpp-python=={version}"
    steps.append(Step("install", wheel_pin, why,
                      pip=("install", "--only-binary", "llama-cpp-python", "--extra-index-url", index, wheel_pin),
                      fallback=source))
    return steps


MACHINE_FACTS = ("python", "platform", "arch", "cuda", "compiler", "nvcc")


def described_machine(machine: Machine, text: str) -> Machine:
    """``machine`` with the facts of a description (``python=3.11,platform=linux,cuda=12.4,…``) replaced:
    what ``install.py --dry-run --machine`` plans for; ValueError naming an unknown fact."""
    facts = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        facts[key.strip()] = value.strip()
    unknown = set(facts) - set(MACHINE_FACTS)
    if unknown:
        raise ValueError(f"--machine: unknown fact(s) {', '.join(sorted(unknown))} ({', '.join(MACHINE_FACTS)})")
    changes: dict = {key: facts[key] for key in ("platform", "arch") if key in facts}
    if "python" in facts:
        changes["python"] = tuple(int(v) for v in facts["python"].split(".")[:2])
    if "cuda" in facts:
        cuda = parse_version(facts["cuda"])
        changes.update(driver_cuda=cuda, nvidia_smi=cuda is not None, proc_driver=cuda is not None, libcuda=cuda is not None)
    for key in ("compiler", "nvcc"):
        if key in facts:
            changes[key] = facts[key].lower() in ("1", "yes", "true")
    return replace(machine, **changes)


def wheel_tags(machine: Machine, installed: Installed = Installed()) -> tuple[str, ...]:
    """The index folders worth reading for this machine: ``cpu``, and the CUDA one the plan would
    choose (:func:`cuda_version`: ``$CUTOUT_GUARD_CUDA``, torch's CUDA, the driver's)."""
    tag = llama_cuda_wheel_tag(cuda_version(machine, installed).value)
    return ("cpu",) + ((tag,) if tag else ())




def _no_compiler_message(device: str, missing: list[str], cuda: Version | None) -> str:
    what = " and ".join(missing)
    hint = "install build-essential and cmake (Debian/Ubuntu), Xcode command-line tools (macOS) or Visual Studio Build Tools (Windows)"
    if device == "cuda":
        hint += f", plus the CUDA {_dotted(cuda) if cuda else '12'} toolkit"
    return (f"no prebuilt llama-cpp-python {LLAMA_CPP_VERSION} wheel fits and building it needs {what}: {hint}, "
            f"then run install.py again; or install a matching wheel yourself "
            f"(pip install llama-cpp-python=={LLAMA_CPP_VERSION} --extra-index-url {LLAMA_WHEEL_INDEX}/<cpu|cu12x>)")


def plan_python_packages(installed: Installed) -> list[Step]:
    steps: list[Step] = []
    if not installed.has("torch"):
        steps.append(Step("warn", "torch", "torch is not installed: install ComfyUI (or torch for your GPU from pytorch.org) "
                          "first; install.py never installs torch"))
    have = installed.version("transformers")
    if have is None or not at_least(have, TRANSFORMERS_MIN):
        spec = f"transformers>={TRANSFORMERS_MIN}"
        why = "Florence-2 needs transformers' native Florence2ForConditionalGeneration"
        why += "" if have is None else f" (installed: {have}; upgrading, never downgrading)"
        steps.append(Step("install", spec, why, pip=("install", spec)))
    return steps


def plan_models(request: Request, present: Mapping[tuple[str, str], bool]) -> list[Step]:
    """A download for each requested model not yet in its folder; present ones are verified."""
    steps = []
    for kind, name in request.models:
        if present.get((kind, name)):
            steps.append(Step("verify", f"{kind}:{name}", "present; checked against its lock file"))
        else:
            steps.append(Step("download", f"{kind}:{name}", "missing from the model folder"))
    return steps


def protected_pins(installed: Installed) -> tuple[str, ...]:
    return tuple(f"{name}=={installed.version(name)}" for name in PROTECTED if installed.has(name))


def make_plan(machine: Machine, installed: Installed, request: Request,
              present: Mapping[tuple[str, str], bool] | None = None) -> tuple[Decision, list[Step]]:
    """(build decision, steps). Pure: same facts, same plan."""
    device = choose_build(machine, request.build)
    steps: list[Step] = []
    if not request.skip_packages:
        cuda = cuda_version(machine, installed).value if device.value == "cuda" else None
        steps += plan_python_packages(installed)
        steps += plan_onnxruntime(device.value, cuda, installed)
        steps += plan_llama(device.value, cuda, machine, installed, request)
    steps += plan_models(request, present or {})
    return device, steps


def changes(steps: Sequence[Step]) -> list[Step]:
    """The steps that would change something (not checks or warnings)."""
    return [s for s in steps if s.action in ("uninstall", "install", "build", "download", "fail")]


# ----------------------------------------------------------------------------- command line pieces


def parse_models(text: str | None, kinds: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """``"ben2,florence2:Florence-2-large"`` -> ((kind, name), ...); ``all`` means every kind.

    A bare kind means its first default model. ``kinds`` maps kind name -> ModelKind.
    """
    if not text:
        return ()
    items = [p.strip() for p in text.split(",") if p.strip()]
    if items == ["all"]:
        items = list(kinds)
    out = []
    for item in items:
        kind, _, name = item.partition(":")
        if kind not in kinds:
            raise ValueError(f"unknown model kind {kind!r} in --models; known: {', '.join(sorted(kinds))}")
        defaults = getattr(kinds[kind], "defaults", ())
        if not name:
            if not defaults:
                raise ValueError(f"model kind {kind!r} has no default model; name one as {kind}:NAME")
            name = defaults[0].name
        elif not any(d.name == name for d in defaults):
            raise ValueError(f"{kind} has no default model {name!r}; choose from {', '.join(d.name for d in defaults)}")
        out.append((kind, name))
    return tuple(dict.fromkeys(out))


def comfyui_root(pack_dir: Path, given: str | None) -> Path | None:
    """``--comfyui DIR``, else the folder two levels up when the pack sits in ``custom_nodes``.

    ``pack_dir`` must not be symlink-resolved: a pack linked into custom_nodes belongs to the
    ComfyUI it is linked into.
    """
    if given:
        return Path(given).expanduser()
    if pack_dir.parent.name == "custom_nodes":
        return pack_dir.parent.parent
    return None


def pip_launcher(python: str = sys.executable) -> list[str] | None:
    """``python -m pip`` when pip is importable here, else ``uv pip`` aimed at this Python."""
    if importlib.util.find_spec("pip") is not None:
        return [python, "-m", "pip"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip"]
    return None


def pip_argv(launcher: Sequence[str], args: Sequence[str], constraints: str | None, python: str = sys.executable) -> list[str]:
    """The full command for one pip call; uv spells a few options differently."""
    argv = list(launcher) + list(args)
    is_uv = len(launcher) >= 2 and Path(launcher[0]).name.startswith("uv") and launcher[1] == "pip"
    if is_uv:
        argv = [a for a in argv if a != "-y"]
        argv = ["--no-cache" if a == "--no-cache-dir" else a for a in argv]
        argv[2:2] = ["--python", python]
    if constraints and args and args[0] == "install":
        argv += ["-c", constraints]
    return argv


# ----------------------------------------------------------------------------- acting


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


Runner = Callable[[list[str], dict], int]


def _run(argv: list[str], env: dict) -> int:
    log.info("  $ %s", " ".join(argv))
    return subprocess.run(argv, env=env).returncode


def carry_out(steps: Sequence[Step], *, installed: Installed, model_folders: Callable[[str], list[Path]] | None = None,
              runner: Runner = _run, launcher: Sequence[str] | None = None) -> Outcome:
    """Do the steps in order; a failed step is reported and the rest still run."""
    outcome = Outcome()
    pip_steps = [s for s in steps if s.pip or (s.fallback and s.fallback.pip)]
    launcher = launcher if launcher is not None else (pip_launcher() if pip_steps else [])
    with tempfile.TemporaryDirectory(prefix="cutout-guard-install-") as tmp:
        constraints = None
        pins = protected_pins(installed)
        if pins:
            constraints = os.path.join(tmp, "constraints.txt")
            Path(constraints).write_text("\n".join(pins) + "\n")
        for step in steps:
            current: Step | None = step
            while current is not None:
                ok = _do(current, launcher, constraints, runner, model_folders, outcome)
                if ok:
                    outcome.done.append(current.describe().splitlines()[0])
                    break
                current = current.fallback
                if current is not None:
                    log.info("  trying instead: %s", current.describe().splitlines()[0])
            else:
                outcome.failed.append(step.target)
    return outcome


def _do(step: Step, launcher, constraints, runner: Runner, model_folders, outcome: Outcome) -> bool:
    log.info("- %s", step.describe().splitlines()[0])
    if step.action == "warn":
        log.warning("  note: %s", step.why)
        return True
    if step.action == "fail":
        log.error("  %s", step.why)
        return False
    if step.action in ("download", "verify"):
        return _model_step(step, model_folders)
    if not launcher:
        log.error("  neither pip nor uv is available to this Python (%s): install pip (python -m ensurepip)", sys.executable)
        return False
    env = dict(os.environ)
    env.update(dict(step.env))
    code = runner(pip_argv(launcher, step.pip, constraints), env)
    if code != 0:
        log.error("  pip exited with %s", code)
    return code == 0


def _model_step(step: Step, model_folders) -> bool:
    from ..core import download, models
    from ..core.errors import CutoutGuardError

    kind_name, _, name = step.target.partition(":")
    kind = models.get_kind(kind_name)
    folders = model_folders(kind.folder_key) if model_folders else []
    try:
        path = download.obtain(kind, name, folders, allow_download=step.action == "download", progress=_Bar(kind.label))
    except CutoutGuardError as exc:
        log.error("  %s", exc)
        return False
    log.info("  %s ok: %s", kind.label, path)
    return True


class _Bar:
    """Prints download progress every 10 %."""

    def __init__(self, label: str):
        self.label, self.last = label, -1

    def __call__(self, done: int, total: int) -> None:
        if total:
            tenth = done * 10 // total
            if tenth != self.last:
                self.last = tenth
                log.info("  %s: %d%% of %.0f MB", self.label, tenth * 10, total / 1e6)


# ----------------------------------------------------------------------------- summary


def summary(build: Decision, installed: Installed, models: Mapping[tuple[str, str], Path | None], failed: Sequence[str]) -> str:
    """A few lines saying what is installed and which workflow folder fits this machine."""
    ort = [f"{p} {installed.version(p)}" for p in ORT_PACKAGES if installed.has(p)]
    llama = installed.version("llama-cpp-python")
    llama_text = f"llama-cpp-python {llama} ({installed.llama_backend or 'unknown'} build)" if llama else "MISSING"
    lines = [
        "Cutout Guard — install summary",
        f"  build         {build.value} ({build.why})",
        f"  onnxruntime   {', '.join(ort) or 'MISSING'}",
        f"  llama.cpp     {llama_text}",
        f"  torch         {installed.version('torch') or 'MISSING'} (left as installed)",
        f"  transformers  {installed.version('transformers') or 'MISSING'}",
    ]
    for (kind, name), path in models.items():
        lines.append(f"  model         {kind}: {name} -> {path if path else 'MISSING'}")
    if failed:
        lines.append(f"  FAILED        {', '.join(failed)} (see the messages above)")
    folder = WORKFLOWS[build.value]
    mismatch = build.value == "cuda" and llama and installed.llama_backend != "cuda"
    lines.append(f"  workflows     {folder}/ fits this machine"
                 + (" (but llama.cpp is not a CUDA build: set n_gpu_layers to 0)" if mismatch else ""))
    return "\n".join(lines)
