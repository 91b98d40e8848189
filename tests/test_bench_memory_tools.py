"""The benchmarks' memory tools: resident memory by kind, sampled from another process, and the
memory cgroup a ComfyUI server runs in (checked here on a stand-in cgroup folder)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devtools.bench import cgroup
from devtools.bench.common import ResidentSampler, resident

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_sampler_sees_another_process_allocate_anonymous_memory():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; b = bytearray(300 * 2**20); sys.stdout.write('x'); sys.stdout.flush(); time.sleep(0.5)"],
        stdout=subprocess.PIPE,
    )
    with ResidentSampler(child.pid, interval=0.01) as sampler:
        assert child.stdout.read(1) == b"x"  # allocated (bytearray zero-fills, so every page is touched)
        sampler.sample()
        child.wait(timeout=30)
    assert sampler.peaks["RssAnon"] >= 290 * MIB
    assert sampler.peaks["VmRSS"] >= sampler.peaks["RssAnon"]
    assert resident(child.pid) == {}  # gone


@pytest.mark.parametrize("v2", [False, True])
def test_memory_limit_writes_the_limit_and_its_launcher_joins_the_group(tmp_path, monkeypatch, v2):
    monkeypatch.setattr(cgroup, "ROOT", tmp_path)
    if v2:
        (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    else:
        (tmp_path / "memory").mkdir()
    limit = cgroup.MemoryLimit("bench", 4 * 2**30)
    folder = tmp_path if v2 else tmp_path / "memory"
    written = {f.name: f.read_text().strip() for f in (folder / "bench").iterdir()}
    assert written == ({"memory.max": str(4 * 2**30), "memory.swap.max": "0"} if v2 else {"memory.limit_in_bytes": str(4 * 2**30)})

    launcher = limit.launcher("/bin/echo", tmp_path)
    run = subprocess.run([launcher, "hello", "world"], capture_output=True, text=True, timeout=30, check=True)
    assert run.stdout == "hello world\n"  # became the program, with its arguments
    assert (folder / "bench" / "cgroup.procs").read_text().strip().isdigit()  # moved itself in first

    (folder / "bench" / ("memory.events" if v2 else "memory.oom_control")).write_text("oom 2\noom_kill 3\n")
    (folder / "bench" / ("memory.peak" if v2 else "memory.max_usage_in_bytes")).write_text("123456\n")
    assert limit.oom_kills() == 3 and limit.peak() == 123456


def test_memory_limit_without_a_memory_cgroup_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroup, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="memory cgroup"):
        cgroup.MemoryLimit("bench", 2**30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_a_childs_peak_is_its_own_not_its_large_parents(request):
    """Regression: the benchmark's BEN2-alone children reported the parent's peak (Linux carries
    ``ru_maxrss`` over into a program its process starts), so a small graph and a large one showed
    the same peak. The parent holds 400 MiB when it starts a child that allocates nothing."""
    parent = (
        "import subprocess, sys; b = bytearray(400 * 2**20); "
        "print(subprocess.run([sys.executable, '-c', 'from devtools.bench.common import peak_rss_mib; "
        "print(peak_rss_mib())'], capture_output=True, text=True, check=True).stdout)"
    )
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True,
                          cwd=request.config.rootpath)
    assert float(done.stdout.split()[-1]) < 200  # a Python that imported one small module
