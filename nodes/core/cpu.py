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
