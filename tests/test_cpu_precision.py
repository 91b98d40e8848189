"""Which precision runs on the CPU, and the log line that says which and why.

The decision is a table over the CPU's feature flags (given here as data) and whether the model's
bf16 results were shown to match fp32's; the bf16 path itself is run on this CPU by forcing it.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cutout_guard.core import cpu
from cutout_guard.engines import florence2
from cutout_guard.engines.florence2 import Florence2
from cutout_guard.engines.torch_device import cpu_precision, resolve_dtype
from devtools.bench.florence2_precision import forced_bf16_on_cpu, greedy_ids
from devtools.synthetic.florence2 import build_florence2

AVX2 = frozenset({"sse2", "avx", "fma", "avx2", "f16c"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}
AVX512_BF16 = AVX512 | {"avx512_bf16"}
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}
DECIDES = "cutout_guard.engines.torch_device"  # its own level: the CLI, run in-process by other tests, quiets "cutout_guard.engines"
NO_UNIT = "bf16 requested; this CPU has no AVX-512-BF16/AMX, running fp32"


@pytest.mark.parametrize(
    "precision, flags, matches, runs, line",
    [
        ("fp32", AVX2, False, "fp32", None),
        ("fp32", AMX, True, "fp32", None),
        ("fp16", AVX2, False, "fp32", "fp16 requested; the CPU has no fp16 kernels for it (e.g. LayerNorm), running fp32"),
        ("fp16", AMX, True, "fp32", "fp16 requested; the CPU has no fp16 kernels for it (e.g. LayerNorm), running fp32"),
        ("bf16", AVX2, True, "fp32", NO_UNIT),
        ("bf16", AVX512, True, "fp32", NO_UNIT),  # AVX-512 without its BF16 extension emulates bf16
        ("bf16", frozenset(), True, "fp32", NO_UNIT),  # flags unreadable: nothing assumed
        ("bf16", AVX512_BF16, True, "bf16", "bf16 requested; this CPU has AVX-512-BF16, running bf16"),
        ("bf16", AMX, True, "bf16", "bf16 requested; this CPU has AMX-BF16/AVX-512-BF16, running bf16"),
        ("bf16", AMX, False, "fp32",
         "bf16 requested; this CPU has AMX-BF16/AVX-512-BF16, but bf16 is not shown to match fp32 here, running fp32"),
    ],
)
def test_cpu_precision_table(precision, flags, matches, runs, line):
    assert cpu_precision(precision, flags, bf16_matches_fp32=matches) == (runs, line)


def test_resolve_dtype_on_the_cpu_logs_the_line_and_cuda_is_left_alone(caplog):
    caplog.set_level(logging.INFO, logger=DECIDES)
    assert resolve_dtype(torch, "bf16", torch.device("cpu"), "Florence-2", bf16_matches_fp32=True, flags=AVX2) == torch.float32
    assert resolve_dtype(torch, "bf16", torch.device("cpu"), "Florence-2", bf16_matches_fp32=True, flags=AMX) == torch.bfloat16
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, f"Florence-2: {NO_UNIT}"),
        (logging.INFO, "Florence-2: bf16 requested; this CPU has AMX-BF16/AVX-512-BF16, running bf16"),
    ]
    caplog.clear()
    assert resolve_dtype(torch, "fp16", torch.device("cuda"), "Florence-2", flags=AVX2) == torch.float16  # no CUDA needed to decide
    assert resolve_dtype(torch, "bf16", torch.device("cuda"), "Florence-2", flags=AVX2) == torch.bfloat16
    assert not caplog.records


def test_resolve_dtype_reads_the_flags_of_this_cpu(monkeypatch):
    seen = []
    monkeypatch.setattr(cpu, "cpu_flags", lambda *a: seen.append(True) or AMX)
    assert resolve_dtype(torch, "bf16", torch.device("cpu"), "m", bf16_matches_fp32=True) == torch.bfloat16 and seen


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_florence2(tmp_path_factory.mktemp("florence2") / "tiny")


def images():
    return [np.random.default_rng(seed).random((40 + 4 * seed, 56, 3)).astype(np.float32) for seed in range(6)]


def test_bf16_on_a_cpu_without_a_bf16_unit_loads_fp32_and_says_why(tiny, caplog, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda *a: AVX2)
    monkeypatch.setattr(florence2, "BF16_MATCHES_FP32", True)  # even a model that matched: this CPU has no unit
    caplog.set_level(logging.INFO, logger=DECIDES)
    model = Florence2.load(tiny, precision="bf16", device="cpu")
    try:
        assert model.running_precision == "fp32" and {p.dtype for p in model.model.parameters()} == {torch.float32}
        assert f"Florence-2: {NO_UNIT}" in [r.getMessage() for r in caplog.records]
    finally:
        model.close()


def test_the_forced_bf16_path_runs_bf16_on_this_cpu(tiny, caplog):
    caplog.set_level(logging.INFO, logger=DECIDES)
    with forced_bf16_on_cpu():
        model = Florence2.load(tiny, precision="bf16", device="cpu")
    try:
        assert model.running_precision == "bf16" and {p.dtype for p in model.model.parameters()} == {torch.bfloat16}
        assert any(r.getMessage().endswith("running bf16") for r in caplog.records)
        assert model.caption(images()[0], max_new_tokens=6, num_beams=1).strip()
    finally:
        model.close()


def test_bf16_matches_fp32_says_what_the_tiny_model_shows(tiny):
    """BF16_MATCHES_FP32 lets bf16 run on a CPU with a bf16 unit; it must hold what greedy decoding
    shows: bf16's token ids equal to fp32's for every image, measured with the bf16 path forced."""
    fp32 = Florence2.load(tiny, precision="fp32", device="cpu")
    with forced_bf16_on_cpu():
        bf16 = Florence2.load(tiny, precision="bf16", device="cpu")
    try:
        equal = [greedy_ids(fp32, rgb, 10) == greedy_ids(bf16, rgb, 10) for rgb in images()]
    finally:
        fp32.close()
        bf16.close()
    assert florence2.BF16_MATCHES_FP32 == all(equal), (
        f"bf16 greedy ids equal fp32's for {sum(equal)} of {len(equal)} images: set florence2.BF16_MATCHES_FP32 "
        f"to {all(equal)} (and check the random-weight base model with devtools.bench.florence2_precision)"
    )
