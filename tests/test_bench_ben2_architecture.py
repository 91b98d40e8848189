"""The benchmark's real-architecture builder (on a BEN2.py-shaped module written here), the machine
description, onnxruntime's GEMM rate and the BEN2-rate table."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from devtools.bench import ben2_architecture, ben2_rate, machine

FAKE_BEN2 = '''
import torch
import torch.nn as nn
from timm.layers import DropPath, to_2tuple, trunc_normal_
from torchvision import transforms
import cv2


class BEN_Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = DropPath(0.1)
        self.head = nn.Conv2d(4, 1, 1)
        trunc_normal_(self.conv.weight, std=0.02)
        self.window = to_2tuple(8)
        self.to_tensor = transforms.ToTensor()

    @torch.inference_mode()
    def forward(self, x):
        return torch.sigmoid(self.head(self.drop(torch.relu(self.conv(x)))))
'''


def test_the_builder_exports_a_ben2_shaped_graph_with_its_flops(tmp_path):
    code = tmp_path / "BEN2.py"
    code.write_text(FAKE_BEN2)
    target = ben2_architecture.cached_path(tmp_path / "cache", code)
    assert target.name.startswith("ben2-architecture-") and target.suffix == ".onnx"
    path = ben2_architecture.build_ben2_architecture(code, target, size=32)
    assert path == target and path.is_file() and not path.with_name(path.stem + ".partial.onnx").exists()
    flops = json.loads(path.with_name(path.name + ".flops").read_text())["flops"]
    assert flops == 2 * (4 * 3 * 9 * 32 * 32 + 1 * 4 * 32 * 32)  # the two convolutions' multiply-adds, counted here
    assert ben2_rate.flops_of(path) == flops

    from cutout_guard.engines.ben2 import Ben2

    model = Ben2.load(path)
    assert model.input_size == 32 and model.input_name == "input"
    alpha = model.matte(np.random.default_rng(0).random((20, 30, 3)).astype(np.float32))
    assert alpha.shape == (20, 30) and np.isfinite(alpha).all()
    assert ben2_architecture.build_ben2_architecture(code, target, size=32) == target  # built once


def test_the_stand_in_modules_are_removed_after_the_import(tmp_path):
    code = tmp_path / "BEN2.py"
    code.write_text(FAKE_BEN2)
    before = {name: sys.modules.get(name) for name in ben2_architecture.STUBBED}
    ben2_architecture.load_network(code)
    assert {name: sys.modules.get(name) for name in ben2_architecture.STUBBED} == before


def test_a_file_without_ben_base_is_refused(tmp_path):
    code = tmp_path / "BEN2.py"
    code.write_text("x = 1\n")
    with pytest.raises(SystemExit, match="no class BEN_Base"):
        ben2_architecture.load_network(code)


CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16
"""


def test_the_cpu_is_described_with_its_vector_features(tmp_path):
    (tmp_path / "xeon").write_text(CPUINFO)
    (tmp_path / "zen").write_text("model name : AMD EPYC\nflags : sse2 avx2 fma\n")
    xeon = machine.cpu_description(tmp_path / "xeon")
    assert xeon == {"model": "Intel(R) Xeon(R) Platinum 8480+",
                    "features": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]}
    assert machine.describe(xeon) == "Intel(R) Xeon(R) Platinum 8480+ — avx2, fma, avx512f, avx512_vnni, avx512_bf16, amx_tile, amx_bf16"
    zen = machine.cpu_description(tmp_path / "zen")
    assert machine.describe(zen) == "AMD EPYC — avx2, fma; no AVX-512, no AMX"


def test_the_gemm_rate_is_measured_by_onnxruntime():
    rate = machine.gemm_rate(1, n=128, runs=3)
    assert rate["n"] == 128 and rate["threads"] == 1 and rate["median_s"] > 0
    assert rate["gflops"] == pytest.approx(2 * 128**3 / rate["median_s"] / 1e9)


def test_the_rate_table_and_the_stand_in_ratios():
    measured = {"gemm": {"n": 2048, "threads": 2, "gflops": 100.0},
                "graphs": {"real": {"median_s": 20.0, "peak_mib": 3000.0, "flops": 2.0e12, "gflops": 100.0, "of_gemm": 1.0},
                           "stand-in": {"median_s": 10.0, "peak_mib": 2850.0, "flops": None, "gflops": None, "of_gemm": None}}}
    measured["graphs"]["real"]["gflops"], measured["graphs"]["real"]["of_gemm"] = 2.0e12 / 20.0 / 1e9, 1.0
    compared = ben2_rate.ratios(measured, "real", "stand-in")
    assert compared == {"time": 0.5, "peak": 0.95, "faithful": False}
    lines = ben2_rate.format_section(measured, compared)
    assert "100.0 GFLOP/s" in lines[0]
    assert lines[3] == "| real | 20.00 | 2.93 | 2.00 | 100.0 | 100% |"
    assert lines[4] == "| stand-in | 10.00 | 2.78 | unknown | — | — |"
    assert lines[5].endswith("not faithful (outside ±15%)")
    assert ben2_rate.ratios(measured, "real", "missing") is None


def test_the_share_is_of_the_higher_gemm_rate_measured_around_ben2():
    """Regression: one GEMM measurement of a second, taken before BEN2's minutes, gave 114 GFLOP/s
    in one run and 161 in the next on the same machine, and BEN2's share moved with it."""
    rates = iter([{"n": 8, "threads": 1, "gflops": 100.0}, {"n": 8, "threads": 1, "gflops": 150.0}])
    calls = []

    def run_child(kind, config):
        calls.append(kind)
        return next(rates) if kind == "gemm" else {"median_s": 10.0, "peak_mib": 1.0}

    measured = ben2_rate.measure({"real": "no-such.onnx"}, threads=1, runs=1, warmup=0, run_child=run_child)
    assert calls == ["gemm", "ben2", "gemm"]
    assert measured["gemm"]["gflops"] == 150.0
    assert "150.0 GFLOP/s (the higher of 100.0 before and 150.0 after BEN2)" in ben2_rate.format_section(measured, None)[0]
