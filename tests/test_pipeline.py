"""The ComfyUI-free pipeline on tiny models: what each stage returns, and cleanup when a load fails."""

from __future__ import annotations

import numpy as np
import pytest

from cutout_guard.app import pipeline as pipeline_mod
from cutout_guard.core.errors import ModelCorrupt
from cutout_guard.app.pipeline import CaptionOptions, CheckOptions, ModelPaths, Pipeline, caption_view
from devtools.synthetic.ben2 import build_ben2
from devtools.synthetic.florence2 import build_florence2
from devtools.synthetic.image_guard import build_image_guard
from devtools.synthetic.llama_guard import build_llama_guard


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return ModelPaths(
        ben2=build_ben2(root / "tiny.onnx", size=64),
        florence2=build_florence2(root / "florence2"),
        llama_guard=build_llama_guard(root / "tiny.gguf", weights="trigger"),
        image_guard=build_image_guard(root / "red", weights="red"),
    )


@pytest.fixture(scope="module")
def loaded(paths):
    with Pipeline.load(paths) as pipe:
        yield pipe


def test_process_runs_four_stages_on_the_cutout(loaded):
    rgb = np.random.default_rng(0).random((30, 50, 3)).astype(np.float32)
    result = loaded.process(rgb, caption_options=CaptionOptions(max_new_tokens=8), check_options=CheckOptions(threshold=0.5))
    assert result.cutout.shape == (30, 50, 4) and result.alpha.shape == (30, 50)
    assert result.cutout.dtype == np.uint8  # what the PNG stores, a quarter of the float cutout's memory
    np.testing.assert_array_equal(result.cutout[..., 3], result.alpha)
    np.testing.assert_array_equal(result.alpha, np.floor(loaded.ben2.matte(rgb) * 255 + 0.5))
    np.testing.assert_array_equal(result.cutout[..., :3], np.floor(rgb * 255 + 0.5))
    colour, alpha = result.cutout[..., :3] / 255.0, result.alpha[..., None] / 255.0
    shown = colour * alpha + (1 - alpha)  # on white, computed here
    view = caption_view(result.cutout)  # uint8: what the image processors are given
    assert view.dtype == np.uint8
    np.testing.assert_allclose(view, np.round(shown * 255), atol=1)
    assert result.caption == loaded.florence2.caption(shown, max_new_tokens=8)
    assert result.verdict == loaded.llama_guard.check(result.caption)
    assert result.image_verdict == loaded.image_guard.check(shown)  # the image check sees what the caption sees
    assert set(result.seconds) == {"cutout", "image_check", "caption", "safety_check"}  # the Save Cutout Report node's keys
    assert all(v > 0 for v in result.seconds.values())
    assert set(loaded.load_seconds) == {"ben2", "image_guard", "florence2", "llama_guard"}


def test_the_image_check_judges_the_cutout_as_shown(loaded):
    """The verdict is the rigged classifier's on the cutout composited on white, not on the photo."""
    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 1.0
    result = loaded.process(red, caption_options=CaptionOptions(max_new_tokens=4))
    expected = loaded.image_guard.check(caption_view(result.cutout))
    assert result.image_verdict == expected and result.image_verdict.model == "red"


def test_without_an_image_guard_the_image_check_does_not_run(paths):
    with Pipeline.load(ModelPaths(ben2=paths.ben2, florence2=paths.florence2, llama_guard=paths.llama_guard)) as pipe:
        result = pipe.process(np.random.default_rng(1).random((16, 16, 3)).astype(np.float32),
                              caption_options=CaptionOptions(max_new_tokens=4))
    assert result.image_verdict is None and "image_check" not in result.seconds
    assert pipe.paths.names()["image_guard"] is None


def test_an_empty_caption_is_unsafe(loaded, monkeypatch):
    """Regression: an empty caption was checked and judged safe."""
    monkeypatch.setattr(loaded.florence2, "caption", lambda *a, **k: "")
    result = loaded.process(np.random.default_rng(2).random((16, 16, 3)).astype(np.float32))
    assert result.caption == "" and result.verdict.safe is False and "empty" in result.verdict.reason


def test_named_categories_use_the_loaded_template(loaded):
    verdict = loaded.llama_guard.check("a grenade on a table")  # the trigger model's unsafe word
    assert not verdict.safe
    assert loaded.named_categories(verdict) == [{"code": "S1", "name": "Violent Crimes"}]


def test_a_failed_load_closes_what_was_loaded(paths, tmp_path, monkeypatch):
    """The last model in LOAD_ORDER is damaged: the ones loaded before it are closed again."""
    closed = []

    def tracked(name):
        real = getattr(pipeline_mod, f"_load_{name}")

        def load(*args):
            engine = real(*args)
            original = engine.close
            engine.close = lambda: (closed.append(name), original())
            return engine

        return load

    for name in pipeline_mod.LOAD_ORDER:
        monkeypatch.setattr(pipeline_mod, f"_load_{name}", tracked(name))
    last = pipeline_mod.LOAD_ORDER[-1]
    broken = tmp_path / "broken"
    broken.write_bytes(b"not a model" * 8)
    with pytest.raises(ModelCorrupt):
        Pipeline.load(ModelPaths(**{**paths.__dict__, last: broken}))
    assert sorted(closed) == sorted(pipeline_mod.LOAD_ORDER[:-1])


def test_close_releases_every_engine(paths):
    pipe = Pipeline.load(paths)
    pipe.close()
    assert (pipe.ben2, pipe.image_guard, pipe.florence2, pipe.llama_guard) == (None, None, None, None)
    pipe.close()  # twice is harmless


def test_release_free_memory_returns_freed_heap_to_the_system():
    """Freed blocks in the middle of the heap stay resident until malloc_trim (the stage-to-stage leftover)."""
    import ctypes
    import ctypes.util

    if not ctypes.util.find_library("c") or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim"):
        pytest.skip("not glibc")
    from devtools.bench.pipeline import rss_bytes

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    big = libc.malloc(24 << 20)  # freeing an mmapped 24 MiB block raises glibc's mmap threshold to 24 MiB
    libc.free(big)
    blocks = [libc.malloc(1 << 20) for _ in range(257)]  # now from the heap, one above the other
    for block in blocks:
        ctypes.memset(block, 1, 1 << 20)
    pin = blocks.pop()  # the last stays live: the freed space below it is not at the heap's top
    before = rss_bytes()
    for block in blocks:
        libc.free(block)
    kept = rss_bytes()
    assert pipeline_mod.release_free_memory() is True
    after = rss_bytes()
    libc.free(pin)
    assert before - kept < (64 << 20)  # free() alone kept most of it resident
    assert kept - after > (192 << 20)
