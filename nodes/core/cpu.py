"""How many CPU threads this process may really use.

``os.cpu_count()`` reports the host's cores; a container limited by a cgroup CPU quota or a
process pinned by CPU affinity may use fewer. Runtimes sized from the host oversubscribe the
cores they get and slow down. Environment settings such as ``OMP_NUM_THREADS=0`` (meant as
"all threads") are ignored here on purpose: every runtime gets an explicit count from this module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _quota_from_cgroup(root: Path) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Threads to use: the smaller of the CPU affinity set and the cgroup quota, at least 1."""
    count = _affinity_count()
    quota = _quota_from_cgroup(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def resolve_threads(threads: int | None) -> int:
    """``threads`` as given when positive, else the CPU quota (0 or None mean auto)."""
    if threads is not None and threads > 0:
        return int(threads)
    return cpu_quota()


# ----------------------------------------------------------------------------- vector features

CPUINFO = Path("/proc/cpuinfo")
BF16_UNITS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX-512-BF16"}  # /proc/cpuinfo flag → its name


def _cpuinfo_field(name: str, cpuinfo: Path) -> str | None:
    """The value of the first ``name : value`` line of ``/proc/cpuinfo``; None when absent or unreadable."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first processor in ``/proc/cpuinfo`` (``avx2``, ``amx_bf16``, …).

    Empty where the file cannot be read or lists no ``flags`` line (not Linux, or not x86): no
    feature is then assumed.
    """
    return frozenset((_cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_model_name(cpuinfo: Path = CPUINFO) -> str | None:
    """The processor's name as ``/proc/cpuinfo`` gives it (``AMD EPYC``); None when it gives none."""
    return _cpuinfo_field("model name", cpuinfo)


def bf16_units(flags: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The bf16 matrix units among ``flags``, by name (``("AMX-BF16", "AVX-512-BF16")``); empty when none."""
    return tuple(name for flag, name in BF16_UNITS.items() if flag in flags)
