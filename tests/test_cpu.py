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
