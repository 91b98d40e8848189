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
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
