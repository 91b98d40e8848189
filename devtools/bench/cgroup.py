"""A memory limit for a benchmark's child process, as a worker's container has (Linux, as root).

A cgroup of its own with ``limit`` bytes and no swap; the child starts inside it through a small
launcher, so everything it maps is charged there from the first byte. Page cache it reads counts
too and is reclaimed under the limit, as in a container (the page cache is dropped first, so that
files other processes read before are charged here as well): a run that finishes inside the limit fits
a worker of that size; one that needs more is killed by the kernel (``oom_kills`` says so).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class MemoryLimit:
    def __init__(self, name: str, limit: int):
        self.limit = limit
        self.v2 = (ROOT / "cgroup.controllers").is_file()
        parent = ROOT if self.v2 else ROOT / "memory"
        if not parent.is_dir():
            raise SystemExit("--memory-limit needs Linux's memory cgroup (/sys/fs/cgroup)")
        self.path = parent / name
        try:
            self.path.mkdir(exist_ok=True)
            if self.v2:
                self._write("memory.max", limit)
                self._write("memory.swap.max", 0)
            else:
                self._write("memory.limit_in_bytes", limit)
                if (self.path / "memory.memsw.limit_in_bytes").exists():
                    self._write("memory.memsw.limit_in_bytes", limit)
        except PermissionError as exc:
            raise SystemExit(f"--memory-limit needs root to make a cgroup: {exc}") from exc

    @staticmethod
    def drop_page_cache() -> None:
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("1\n")
        except OSError as exc:
            raise SystemExit(f"--memory-limit drops the page cache first and cannot here: {exc}") from exc

    def _write(self, name: str, value: int) -> None:
        (self.path / name).write_text(f"{value}\n")

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def launcher(self, program: str, folder: Path) -> str:
        """A script that moves itself into the cgroup, then becomes ``program`` (same pid)."""
        script = folder / "in-memory-limit.sh"
        procs = shlex.quote(str(self.path / "cgroup.procs"))
        script.write_text(f'#!/bin/sh\necho $$ > {procs}\nexec {shlex.quote(program)} "$@"\n')
        script.chmod(0o755)
        return str(script)

    def peak(self) -> int | None:
        """The most memory charged to the cgroup so far, in bytes (page cache included)."""
        text = self._read("memory.peak" if self.v2 else "memory.max_usage_in_bytes").strip()
        return int(text) if text.isdigit() else None

    def oom_kills(self) -> int:
        """Processes the kernel killed for the limit (0 where it does not tell)."""
        for line in self._read("memory.events" if self.v2 else "memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError:  # a process still in it: the kernel removes nothing
            pass
