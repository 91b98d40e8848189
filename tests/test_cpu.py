"""Thread count from CPU affinity and the cgroup quota."""

from __future__ import annotations

import os

from cutout_guard.core import cpu


def affinity():
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_limits_threads(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs → 2 threads
    assert cpu.cpu_quota(tmp_path) == min(affinity(), 2)


def test_cgroup_v2_unlimited_uses_affinity(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu.cpu_quota(tmp_path) == affinity()


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.cpu_quota(tmp_path) == 1


def test_no_cgroup_files_uses_affinity(tmp_path):
    assert cpu.cpu_quota(tmp_path) == affinity()


def test_affinity_is_respected(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert cpu.cpu_quota(tmp_path) == 1


def test_resolve_threads_explicit_and_auto(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_quota", lambda: 3)
    assert cpu.resolve_threads(5) == 5
    assert cpu.resolve_threads(0) == 3
    assert cpu.resolve_threads(None) == 3


CPUINFO_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx f16c fma avx2 sha_ni vaes
processor\t: 1
flags\t\t: fpu sse sse2 avx f16c fma avx2 sha_ni vaes
"""
CPUINFO_SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_flags_and_name_come_from_cpuinfo(tmp_path):
    zen3, spr = tmp_path / "zen3", tmp_path / "spr"
    zen3.write_text(CPUINFO_ZEN3)
    spr.write_text(CPUINFO_SAPPHIRE_RAPIDS)
    assert cpu.cpu_flags(zen3) == {"fpu", "sse", "sse2", "avx", "f16c", "fma", "avx2", "sha_ni", "vaes"}
    assert cpu.cpu_model_name(zen3) == "AMD EPYC 7B13"
    assert cpu.bf16_units(cpu.cpu_flags(zen3)) == ()
    assert cpu.bf16_units(cpu.cpu_flags(spr)) == ("AMX-BF16", "AVX-512-BF16")
    assert cpu.bf16_units({"avx512_bf16"}) == ("AVX-512-BF16",)


def test_no_cpuinfo_means_no_features(tmp_path):
    assert cpu.cpu_flags(tmp_path / "missing") == frozenset() and cpu.cpu_model_name(tmp_path / "missing") is None
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # not x86: no flags line
    assert cpu.cpu_flags(tmp_path / "arm") == frozenset()
