"""The GPU check (devtools/gpu_check.sh) on this CPU-only machine: it says there is no GPU and
exits 2; its table, its verdicts and its child processes, fed with given rows and log lines."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import gpu_check
from devtools.gpu_check import GPU_SETTINGS, Row, devices_row, exit_code, offload_row, render_table

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(bool(gpu_check.nvidia_gpus()), reason="this machine has an NVIDIA GPU: the check would run for real")
def test_on_a_machine_without_a_gpu_it_says_so_and_exits_2():
    done = subprocess.run(["sh", str(REPO / "devtools" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable}, cwd="/")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == gpu_check.NO_GPU and "no NVIDIA GPU" in done.stderr and not done.stdout


def test_gpus_come_from_nvidia_smi_else_from_the_driver(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1234)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    proc = tmp_path / "gpus"
    assert gpu_check.nvidia_gpus(str(smi), proc) == ["GPU 0: NVIDIA H200 (UUID: GPU-1234)"]
    assert gpu_check.nvidia_gpus(str(tmp_path / "absent"), proc) == []
    (proc / "0000:01:00.0").mkdir(parents=True)
    assert gpu_check.nvidia_gpus(str(tmp_path / "absent"), proc) == ["0000:01:00.0"]
    smi.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")  # a driver without a working GPU
    assert gpu_check.nvidia_gpus(str(smi), tmp_path / "none") == []


def test_the_table_has_one_row_per_check_and_escapes_what_would_break_it():
    rows = [Row("onnxruntime_cuda", "pass", "providers ['CUDAExecutionProvider', 'CPUExecutionProvider']", 1.234),
            Row("bench", "fail", "exit 1: a | b\nsecond line", 61.0)]
    assert render_table(rows).splitlines() == [
        "| check | result | detail | seconds |",
        "|---|---|---|---|",
        "| onnxruntime_cuda | pass | providers ['CUDAExecutionProvider', 'CPUExecutionProvider'] | 1.2 |",
        "| bench | fail | exit 1: a \\| b second line | 61.0 |",
    ]


def test_any_failing_row_fails_the_check():
    passing = Row("a", "pass", "", 0.0)
    assert exit_code([passing, passing]) == 0
    assert exit_code([passing, Row("b", "fail", "", 0.0)]) == 1
    assert exit_code([]) == 1  # nothing checked is not a pass


def test_offload_is_read_from_llama_cpp_log():
    log = ["load_tensors: loading model tensors, this can take a while... (mmap = true)\n",
           "load_tensors: offloading 2 repeating layers to GPU\n", "load_tensors: offloading output layer to GPU\n",
           "load_tensors: offloaded 3/3 layers to GPU\n"]
    assert gpu_check.offloaded_layers(log) == (3, 3)
    assert offload_row(log, 2, "", 1.0).result == "pass"
    assert offload_row(log, 4, "", 1.0).result == "fail"  # the GGUF has more layers than went to the GPU
    partial = [line.replace("3/3", "2/3") for line in log]
    assert offload_row(partial, 2, "", 1.0).result == "fail"
    missing = offload_row(log[:1], 2, "", 1.0)
    assert missing.result == "fail" and "no offload line" in missing.detail


def test_the_report_devices_must_be_the_gpu_settings():
    assert devices_row("w", GPU_SETTINGS, GPU_SETTINGS, 1.0).result == "pass"
    assert devices_row("w", {"provider": "CUDA", "precision": None, "n_gpu_layers": None}, GPU_SETTINGS, 1.0).result == "pass"
    fell_back = devices_row("w", {"provider": "CUDA", "precision": "fp32", "n_gpu_layers": -1}, GPU_SETTINGS, 1.0)
    assert fell_back.result == "fail" and "'precision': 'fp32'" in fell_back.detail
    assert devices_row("w", {"provider": None, "precision": None, "n_gpu_layers": None}, GPU_SETTINGS, 1.0).result == "fail"


def test_a_check_runs_in_its_own_process_and_its_failure_is_a_row(tmp_path):
    rows = gpu_check.run_child("onnxruntime_cuda", tmp_path, 300)  # this onnxruntime has no CUDA provider
    assert [(r.check, r.result) for r in rows] == [("onnxruntime_cuda", "fail")]
    assert "CUDA" in rows[0].detail and "onnxruntime-gpu" in rows[0].detail
    slow = gpu_check.run_child("onnxruntime_cuda", tmp_path, 0.01)
    assert slow[0].result == "fail" and "did not finish" in slow[0].detail


@pytest.mark.comfyui
def test_the_workflow_rows_judge_real_reports(comfyui, tmp_path):
    """The check's workflow runner, on the CPU workflows in the real CPU ComfyUI: every report says the CPU settings."""
    from photo import make_photo

    rows = gpu_check.workflow_rows(comfyui, REPO / "workflows_cpu", {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0},
                                   make_photo(tmp_path / "photo.jpg"))
    assert len(rows) == len(list((REPO / "workflows_gpu").glob("*.api.json"))) >= 3
    assert all(r.result == "pass" and "report devices" in r.detail for r in rows), render_table(rows)
