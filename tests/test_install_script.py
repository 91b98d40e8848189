"""install.py as ComfyUI-Manager runs it: a real process, from the pack folder, with nothing installed for it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cutout_guard.core import models
from cutout_guard.core.models import DefaultModel, ModelKind, RemoteFile, lock_path

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.py"


WHEEL_INDEX = Path(__file__).resolve().parent / "data" / "whl"


def run(*args, cwd=None, python=(sys.executable,), script=INSTALL, **env_values):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_GUARD_", "CUDA_VISIBLE"))}
    env["CUTOUT_GUARD_WHEEL_INDEX"] = str(WHEEL_INDEX)  # never the network: the index pages of tests/data
    env.update(env_values)
    return subprocess.run([*python, str(script), *args], cwd=cwd or script.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def distributions() -> set[tuple[str, str]]:
    importlib.invalidate_caches()
    return {(d.metadata["Name"], d.version) for d in importlib.metadata.distributions()}


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    before = distributions()
    comfy = tmp_path / "ComfyUI"
    result = run("--dry-run", "--models", "all", "--comfyui", str(comfy), CUTOUT_GUARD_DEVICE="cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Dry run: nothing was changed" in out
    assert "build         cpu (set by CUTOUT_GUARD_DEVICE)" in out
    assert "workflows_cpu/ fits this machine" in out
    for kind in models.KINDS.values():  # read at run time: every registered kind is offered
        assert f"download {kind.kind}:{kind.defaults[0].name}" in out
    assert not comfy.exists()
    assert distributions() == before


def test_build_flag_and_its_old_name_both_choose_the_build(tmp_path):
    for flag in ("--build", "--device"):  # --device: the name before, in scripts written then
        result = run("--dry-run", flag, "cuda", CUTOUT_GUARD_CUDA="12.6")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "build         cuda (set by --build)" in result.stdout


def test_dry_run_for_a_gpu_image_picks_cuda_12_builds(tmp_path):
    result = run("--dry-run", CUTOUT_GUARD_BUILD="cuda", CUTOUT_GUARD_CUDA="12.6")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "onnxruntime-gpu>=1.20,<1.27" in out
    assert "workflows_gpu/ fits this machine" in out
    plan = out.split("Dry run")[0]
    from cutout_guard.install.installer import installed_packages

    if installed_packages().llama_backend == "cuda":
        assert "llama-cpp-python" not in plan
    else:  # the CPU build of the test environment must be replaced by the CUDA one
        assert "uninstall llama-cpp-python" in plan
        assert "/whl/cu125" in plan and "-DGGML_CUDA=on" in plan and "/whl/cpu" not in plan


def _copy_pack(dest: Path) -> Path:
    dest.mkdir(parents=True)
    shutil.copy2(INSTALL, dest / "install.py")
    shutil.copytree(REPO / "nodes", dest / "nodes", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_runs_with_the_standard_library_only_from_a_custom_nodes_folder(tmp_path):
    """ComfyUI-Manager may run install.py before anything else is importable, and the pack is
    never pip-installed: python -S (no site-packages at all) must still plan."""
    probe = subprocess.run([sys.executable, "-S", "-c", "import numpy"], capture_output=True)
    assert probe.returncode != 0, "python -S still sees site-packages; the test would prove nothing"
    pack = _copy_pack(tmp_path / "ComfyUI" / "custom_nodes" / "cutout-guard")
    result = run("--dry-run", "--models", "ben2", python=(sys.executable, "-S"), script=pack / "install.py",
                 CUTOUT_GUARD_DEVICE="cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"ComfyUI folder: {tmp_path / 'ComfyUI'}" in out
    assert "install onnxruntime>=1.20" in out and "torch is not installed" in out
    assert "download ben2:BEN2_Base.onnx" in out and "ben2: BEN2_Base.onnx -> MISSING" in out


def test_a_symlinked_pack_belongs_to_the_comfyui_it_is_linked_into(tmp_path):
    nodes = tmp_path / "ComfyUI" / "custom_nodes"
    nodes.mkdir(parents=True)
    (nodes / "cutout-guard").symlink_to(REPO, target_is_directory=True)
    result = run("--dry-run", script=nodes / "cutout-guard" / "install.py", cwd=nodes / "cutout-guard", CUTOUT_GUARD_DEVICE="cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ComfyUI folder: {tmp_path / 'ComfyUI'}" in result.stdout


def test_bad_arguments_say_what_is_wrong(tmp_path):
    result = run("--dry-run", "--models", "ben3", "--comfyui", str(tmp_path))
    assert result.returncode == 2 and "unknown model kind 'ben3'" in result.stdout and "ben2" in result.stdout
    pack = _copy_pack(tmp_path / "src" / "cutout-guard")
    result = run("--dry-run", "--models", "ben2", script=pack / "install.py")
    assert result.returncode == 2 and "--comfyui DIR" in result.stdout
    result = run("--dry-run", CUTOUT_GUARD_DEVICE="tpu")
    assert result.returncode == 2 and "cpu, cuda or auto" in result.stdout


@pytest.fixture
def install_module():
    spec = importlib.util.spec_from_file_location("cutout_guard_install_script", INSTALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_download_through_the_pack_and_a_second_run_changes_nothing(hub, tmp_path, monkeypatch, install_module, capsys):
    """--models goes through the pack's own checked download into ComfyUI's model folder."""
    data = b"tiny stand-in for a BEN2 model" * 100
    remote = RemoteFile("BEN2_Base.onnx", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    tiny = ModelKind("ben2", "ben2", (".onnx",), (DefaultModel("BEN2_Base.onnx", "PramaLLC/BEN2", (remote,)),), label="BEN2")
    monkeypatch.setitem(models.KINDS, "ben2", tiny)
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", data)
    comfy = tmp_path / "ComfyUI"

    assert install_module.main(["--models-only", "--models", "ben2", "--comfyui", str(comfy)]) == 0
    target = comfy / "models" / "ben2" / "BEN2_Base.onnx"
    assert target.read_bytes() == data and lock_path(target).is_file()
    first = capsys.readouterr().out
    assert "download ben2:BEN2_Base.onnx" in first and f"ben2: BEN2_Base.onnx -> {target}" in first

    requests = len(hub.state.requests)
    assert install_module.main(["--models-only", "--models", "ben2", "--comfyui", str(comfy)]) == 0
    second = capsys.readouterr().out
    assert "Plan (nothing to change)" in second and "verify ben2:BEN2_Base.onnx" in second
    assert len(hub.state.requests) == requests  # nothing fetched again

    target.write_bytes(data[:-1] + b"!")  # same size, other bytes: the lock catches it
    os.utime(target, ns=(1, 1))
    assert install_module.main(["--models-only", "--models", "ben2", "--comfyui", str(comfy)]) == 1
    assert "damaged" in capsys.readouterr().out


def test_a_gated_model_without_token_fails_with_the_fix(hub, tmp_path, monkeypatch, install_module, capsys):
    data = b"gguf" * 64
    remote = RemoteFile("guard.gguf", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    gated = ModelKind("llama_guard", "LLM", (".gguf",), (DefaultModel("guard.gguf", "meta/guard", (remote,)),), label="Llama Guard")
    monkeypatch.setitem(models.KINDS, "llama_guard", gated)
    hub.add("meta/guard", "guard.gguf", data)
    hub.state.gated.add("meta/guard")
    assert install_module.main(["--models-only", "--models", "llama_guard", "--comfyui", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "HF_TOKEN" in out and "FAILED" in out


def test_main_leaves_the_pack_logger_as_it_found_it(install_module, tmp_path, capsys):
    """Run in-process, install.py must not keep printing the pack's log records to stdout."""
    import logging

    pack_log = logging.getLogger("cutout_guard")
    before = (list(pack_log.handlers), pack_log.level, pack_log.propagate)
    assert install_module.main(["--dry-run", "--build", "cpu", "--comfyui", str(tmp_path)]) == 0
    assert "install summary" in capsys.readouterr().out
    assert (list(pack_log.handlers), pack_log.level, pack_log.propagate) == before
    logging.getLogger("cutout_guard.router").warning("after the installer")
    assert "after the installer" not in capsys.readouterr().out


def test_dry_run_on_a_described_machine_with_and_without_a_prebuilt_wheel():
    """The index pages in tests/data: a 0.3.36 CPU wheel for cp311 Linux, only 0.3.19 for cp312, none usable for cp313."""
    fits = run("--dry-run", "--build", "cpu", "--machine", "python=3.11,platform=linux,arch=x86_64,compiler=yes")
    assert fits.returncode == 0, fits.stderr
    assert "install llama-cpp-python==0.3.36 — prebuilt CPU wheel from" in fits.stdout
    older = run("--dry-run", "--build", "cpu", "--machine", "python=3.12,platform=linux,arch=x86_64,compiler=yes")
    assert "install llama-cpp-python==0.3.19 — prebuilt CPU wheel" in older.stdout and "0.3.19 is the newest that fits" in older.stdout
    none = run("--dry-run", "--build", "cpu", "--machine", "python=3.13,platform=linux,arch=x86_64,compiler=yes")
    assert "build llama-cpp-python==0.3.36 — from source for the CPU — takes 15–25 min" in none.stdout
    assert "no prebuilt CPU wheel for cp313 linux x86_64" in none.stdout
    cuda = run("--dry-run", "--build", "cuda", "--machine", "python=3.11,platform=linux,arch=x86_64,cuda=12.4,compiler=yes,nvcc=no")
    assert "install llama-cpp-python==0.3.4 — prebuilt CUDA 12.4 wheel" in cuda.stdout
    wrong = run("--machine", "python=3.11")
    assert wrong.returncode == 2 and "--dry-run" in wrong.stdout + wrong.stderr


def test_an_install_that_cannot_get_llama_cpp_exits_0_naming_the_command(monkeypatch, capsys):
    """ComfyUI-Manager reports a non-zero exit as a failed install although the pack loads: only
    llama-cpp-python missing is a warning naming the one command that finishes the job."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cutout_guard_install_script", INSTALL)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    installer, _ = script._package()
    monkeypatch.setenv("CUTOUT_GUARD_WHEEL_INDEX", str(WHEEL_INDEX))
    monkeypatch.setattr(installer, "carry_out", lambda steps, **kw: installer.Outcome(failed=["llama-cpp-python==0.3.36"]))
    monkeypatch.setattr(installer, "installed_packages", lambda: installer.Installed({"onnxruntime": "1.32.0"}))
    assert script.main(["--build", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "llama-cpp-python could not be installed" in out and "python install.py --llama-source" in out
    monkeypatch.setattr(installer, "carry_out", lambda steps, **kw: installer.Outcome(failed=["onnxruntime>=1.20"]))
    assert script.main(["--build", "cpu"]) == 1  # anything else failing still fails
    # an image build sets the strict mode: an image without llama-cpp-python must not be built quietly
    monkeypatch.setattr(installer, "carry_out", lambda steps, **kw: installer.Outcome(failed=["llama-cpp-python==0.3.36"]))
    monkeypatch.setenv(installer.STRICT_ENV, "1")
    assert script.main(["--build", "cpu"]) == 1
