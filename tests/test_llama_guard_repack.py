"""Llama Guard loads without llama.cpp's repacked weight copy on the CPU (3 GiB less for the 8B guard)."""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from llama_guard_models import model  # noqa: E402

from cutout_guard.engines.llama_guard import LlamaGuard  # noqa: E402


@pytest.fixture
def seen(monkeypatch):
    """The use_extra_bufts default each Llama() load starts from."""
    if not hasattr(llama_cpp.llama_cpp.llama_model_default_params(), "use_extra_bufts"):
        pytest.skip("this llama-cpp-python has no use_extra_bufts parameter")
    values = []
    real = llama_cpp.Llama

    class Spy(real):
        def __init__(self, *args, **kwargs):
            values.append(bool(llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", Spy)
    return values


def test_cpu_load_turns_repacking_off_and_restores_the_default(seen):
    default = bool(llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts)
    guard = LlamaGuard.load(model("tiny"), n_gpu_layers=0, threads=1)
    guard.close()
    assert seen == [False]
    assert bool(llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts) == default


def test_repack_can_be_asked_for(seen):
    LlamaGuard.load(model("tiny"), n_gpu_layers=0, threads=1, repack=True).close()
    assert seen == [True]


def test_weight_repacking_sets_and_restores_the_parameter():
    from cutout_guard.engines.llama_guard import weight_repacking

    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params
    if not hasattr(original(), "use_extra_bufts"):
        pytest.skip("this llama-cpp-python has no use_extra_bufts parameter")
    default = original().use_extra_bufts
    with weight_repacking(False):
        assert module.llama_model_default_params().use_extra_bufts is False
    with weight_repacking(True):
        assert module.llama_model_default_params().use_extra_bufts is True
    with weight_repacking(None):
        assert module.llama_model_default_params is original
    assert module.llama_model_default_params is original and original().use_extra_bufts == default
