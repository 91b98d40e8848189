"""Llama Guard loads without llama.cpp's repacked weight copy on the CPU (3 GiB less for the 8B guard),
and does so per model: nothing shared in llama_cpp changes, so other packs' loads keep llama.cpp's
default. What llama.cpp did is read from its own log (its "CPU_REPACK" weight buffer)."""

from __future__ import annotations

from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from cutout_guard.engines.llama_guard import LlamaGuard, llama_class  # noqa: E402
from devtools.bench import common  # noqa: E402
from devtools.bench.common import repacked_mib  # noqa: E402
from devtools.synthetic.llama_guard import build_llama_guard  # noqa: E402


@pytest.fixture(scope="module")
def q4_0(tmp_path_factory):
    """A tiny guard quantized to Q4_0, a type llama.cpp repacks on AVX2 / NEON CPUs."""
    return build_llama_guard(tmp_path_factory.mktemp("repack") / "tiny-q4_0.gguf", shape="tiny", quantize="Q4_0")


@pytest.fixture
def llama_log():
    """Every line llama.cpp logs while the test runs."""
    with common.llama_log() as lines:
        yield lines


def plain_load_repacks(path: Path, lines: list[str]) -> float:
    """What llama.cpp does by default (as another pack's plain ``Llama`` load gets it)."""
    lines.clear()
    llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False).close()
    return repacked_mib(lines)


def repacks_by_default() -> bool:
    """True where llama.cpp repacks Q4_0 by default (x86 with AVX2), so a test has something to tell apart."""
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_cpu_load_makes_no_repacked_copy_and_other_loads_keep_the_default(q4_0, llama_log):
    default_params = llama_cpp.llama_cpp.llama_model_default_params
    default = plain_load_repacks(q4_0, llama_log)
    if repacks_by_default():  # the machine repacks Q4_0 by default: the check below has something to tell apart
        assert default > 0
    llama_log.clear()
    LlamaGuard.load(q4_0, n_gpu_layers=0, threads=1).close()
    assert llama_log, "llama.cpp logged nothing: the log callback did not take"
    assert repacked_mib(llama_log) == 0
    # nothing shared was swapped: the next plain load is llama.cpp's default again
    assert llama_cpp.llama_cpp.llama_model_default_params is default_params
    assert llama_cpp.llama_model_default_params().use_extra_bufts is True
    assert plain_load_repacks(q4_0, llama_log) == default


def test_repack_can_be_asked_for_and_matches_the_default(q4_0, llama_log):
    default = plain_load_repacks(q4_0, llama_log)
    llama_log.clear()
    LlamaGuard.load(q4_0, n_gpu_layers=0, threads=1, repack=True).close()
    assert repacked_mib(llama_log) == default


def test_llama_cpp_default_is_the_plain_class():
    assert llama_class(llama_cpp, None) is llama_cpp.Llama
    assert issubclass(llama_class(llama_cpp, False), llama_cpp.Llama)
