"""Timing and memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import ctypes
import re
import resource
import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], *, runs: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def interleaved_medians(fns: dict[str, Callable[[], object]], *, runs: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Time several functions in alternation (A B A B ...) so drift in machine load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB: the kernel's ``VmHWM``, which starts
    afresh in a new program. ``ru_maxrss`` does not: a child started by a large process inherits
    the parent's peak, so it is only the fallback where ``/proc`` is missing."""
    from cutout_guard.app.stages import peak_memory

    peak = peak_memory()
    return peak / 2**20 if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


REPACK_BUFFER = re.compile(r"CPU_REPACK model buffer size\s*=\s*([\d.]+) MiB")


@contextlib.contextmanager
def llama_log():
    """Every line llama.cpp logs inside the block (llama-cpp-python's own log callback is put back after)."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def repacked_mib(lines: list[str]) -> float:
    """The repacked weight copy llama.cpp made in a load, from its log (MiB; 0 when it made none)."""
    return sum(float(m.group(1)) for line in lines for m in [REPACK_BUFFER.search(line)] if m)


def resident(pid: int | str = "self") -> dict[str, int]:
    """A process's resident memory now, in bytes: ``VmRSS`` (all), ``RssAnon`` (heap, arenas, copied
    weights) and ``RssFile`` (mapped files: an mmap'd GGUF, shared libraries); empty once it ended."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return fields


class ResidentSampler:
    """The largest anonymous and file-backed resident memory of a process (:func:`resident`), sampled
    every ``interval`` seconds in a background thread (``with`` it around the work).

    The kernel's peak (VmHWM) adds both kinds; they differ under a memory limit: file-backed pages
    (an mmap'd GGUF, read-only model files) can be dropped and read again, anonymous ones cannot.
    """

    FIELDS = ("RssAnon", "RssFile", "VmRSS")

    def __init__(self, pid: int, interval: float = 0.1):
        import threading

        self.pid, self.interval = pid, interval
        self.peaks = dict.fromkeys(self.FIELDS, 0)  # bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

        self.major_faults = 0  # pages the process had to read (back) from disk so far

    def sample(self) -> None:
        for name, value in resident(self.pid).items():
            self.peaks[name] = max(self.peaks[name], value)
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                self.major_faults = int(handle.read().rpartition(")")[2].split()[9])  # majflt, after the name
        except (OSError, IndexError, ValueError):  # the process ended
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "ResidentSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
