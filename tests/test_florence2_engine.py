"""Florence-2 engine on a tiny model built here: same captions as direct transformers calls, precision
fall-back on the CPU, and clear errors for damaged, pickled or remote-code model folders."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from cutout_guard.core import cpu
from cutout_guard.engines import florence2 as engine
from cutout_guard.engines.florence2 import Florence2
from cutout_guard.core.errors import BadInput, DeviceUnavailable, ModelCorrupt
from devtools.synthetic.florence2 import build_florence2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_florence2(tmp_path_factory.mktemp("florence2") / "tiny")


@pytest.fixture(scope="module")
def loaded(tiny):
    model = Florence2.load(tiny, precision="fp32", device="cpu")
    yield model
    model.close()


def image(seed: int, height: int = 40, width: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)


def direct_caption(folder, rgb, task, max_new_tokens, num_beams):
    """The caption the transformers documentation's recipe gives: processor → generate → post-process."""
    from PIL import Image
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder)
    model = Florence2ForConditionalGeneration.from_pretrained(folder).eval()
    pil = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    inputs = processor(text=task, images=pil, return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    text = processor.batch_decode(ids, skip_special_tokens=False)[0]
    return processor.post_process_generation(text, task=task, image_size=pil.size)[task]


@pytest.mark.parametrize(
    "seed, task, num_beams",
    [(0, "<CAPTION>", 3), (1, "<CAPTION>", 1), (2, "<DETAILED_CAPTION>", 3), (3, "<MORE_DETAILED_CAPTION>", 2)],
)
def test_caption_equals_direct_transformers(tiny, loaded, seed, task, num_beams):
    rgb = image(seed)
    got = loaded.caption(rgb, task=task, max_new_tokens=12, num_beams=num_beams)
    assert got == direct_caption(tiny, rgb, task, 12, num_beams)
    assert got.strip() and "<" not in got  # post-processed text, not raw tokens


def test_different_images_give_different_captions_and_repeats_are_identical(loaded):
    captions = [loaded.caption(image(seed), max_new_tokens=10) for seed in range(4)]
    assert len(set(captions)) >= 3
    assert loaded.caption(image(0), max_new_tokens=10) == captions[0]


def test_stages_compose_to_caption(loaded):
    rgb = image(5)
    inputs = loaded.preprocess(rgb, "<CAPTION>")
    assert inputs["pixel_values"].shape == (1, 3, 64, 64)
    assert int((inputs["input_ids"] == loaded.model.config.image_token_id).sum()) == (64 // 32) ** 2 + 1
    ids = loaded.generate(inputs, max_new_tokens=7, num_beams=1, min_new_tokens=7)
    assert ids.shape[1] == 1 + 7  # decoder start token + exactly the fixed number of new tokens
    assert loaded.postprocess(ids, "<CAPTION>", (56, 40)) == loaded.caption(rgb, max_new_tokens=7, num_beams=1, min_new_tokens=7)


def test_caption_is_model_generate_on_the_processor_inputs(loaded, monkeypatch):
    """caption() calls model.generate(**inputs) itself (the path the reference comparison uses)."""
    calls = []
    real = loaded.model.generate
    monkeypatch.setattr(loaded.model, "generate", lambda **kw: calls.append(sorted(kw)) or real(**kw))
    loaded.caption(image(1), max_new_tokens=5, num_beams=1)
    assert calls == [sorted(["input_ids", "attention_mask", "pixel_values", "max_new_tokens", "num_beams", "do_sample", "use_cache"])]


def test_stage_timings_come_from_the_hooks_and_change_nothing(loaded):
    rgb = image(2)
    timings: dict = {}
    timed = loaded.caption(rgb, max_new_tokens=6, num_beams=2, timings=timings)
    assert timed == loaded.caption(rgb, max_new_tokens=6, num_beams=2)
    assert list(timings) == ["preprocess", "vision_encoder", "text_encoder", "decoding", "postprocess"]
    assert all(v > 0 for v in timings.values()), timings  # each hook fired: the encoders ran inside generate
    assert not loaded.model.get_encoder()._forward_hooks and not loaded.model.model.vision_tower._forward_pre_hooks


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cpu_runs_fp32_and_says_so(tiny, caplog, monkeypatch, precision):
    monkeypatch.setattr(cpu, "cpu_flags", lambda *a: frozenset({"avx2", "fma"}))  # a CPU without a bf16 unit
    caplog.set_level(logging.INFO, logger="cutout_guard")
    model = Florence2.load(tiny, precision=precision, device="cpu")
    try:
        assert model.dtype == torch.float32 and model.precision == precision and model.running_precision == "fp32"
        assert {p.dtype for p in model.model.parameters()} == {torch.float32}
        notes = [r for r in caplog.records if r.levelno == logging.WARNING and precision in r.getMessage()]
        assert len(notes) == 1 and "fp32" in notes[0].getMessage() and "CPU" in notes[0].getMessage()
        assert model.caption(image(0), max_new_tokens=6).strip()
    finally:
        model.close()


def test_fp32_logs_no_fallback(tiny, caplog):
    caplog.set_level(logging.INFO, logger="cutout_guard")
    Florence2.load(tiny, precision="fp32", device="cpu").close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_threads_none_leaves_torch_as_it_is(tiny):
    """Inside ComfyUI torch's thread count is the whole process's: a load without threads keeps it."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = Florence2.load(tiny, device="cpu")
        model.caption(image(0), max_new_tokens=3)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        model.caption(image(0), max_new_tokens=3)
        assert torch.get_num_threads() == 2
        model.close()
    finally:
        torch.set_num_threads(before)


def test_threads_apply_to_this_models_calls_and_are_put_back(tiny, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model = Florence2.load(tiny, device="cpu", threads=1)
        assert torch.get_num_threads() == 2  # the load put it back
        seen = []
        real = model.model.generate
        monkeypatch.setattr(model.model, "generate", lambda **kw: seen.append(torch.get_num_threads()) or real(**kw))
        model.caption(image(0), max_new_tokens=3)
        assert seen == [1] and torch.get_num_threads() == 2
        model.close()
    finally:
        torch.set_num_threads(before)


def test_bad_task_and_image(loaded):
    with pytest.raises(BadInput, match="<DETAILED_CAPTION>"):
        loaded.caption(image(0), task="<OD>")
    with pytest.raises(BadInput, match="H×W×3"):
        loaded.caption(np.zeros((8, 8, 4), np.float32))
    with pytest.raises(BadInput, match="precision"):
        engine.resolve_dtype(torch, "int8", torch.device("cpu"))


def test_running_precision_names():
    def named(dtype):
        return Florence2(None, None, None, torch.device("cpu"), dtype, "fp32").running_precision

    assert [named(d) for d in (torch.float32, torch.float16, torch.bfloat16)] == ["fp32", "fp16", "bf16"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(tiny):
    with pytest.raises(DeviceUnavailable, match="device cpu"):
        Florence2.load(tiny, precision="fp16", device="cuda")


def copy_of(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "model")


def test_truncated_weights_are_model_corrupt(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelCorrupt, match=r"truncated.*install\.py --models florence2"):
        Florence2.load(folder)


def test_garbage_weights_are_model_corrupt(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelCorrupt, match="model.safetensors"):
        Florence2.load(folder)


def test_pickle_weights_are_never_loaded(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelCorrupt, match="pickle files are never loaded"):
        Florence2.load(folder)


def test_remote_code_layout_is_refused(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelCorrupt, match="florence-community/Florence-2-base"):
        Florence2.load(folder)


@pytest.mark.parametrize("name", ["tokenizer.json", "processor_config.json", "preprocessor_config.json", "config.json"])
def test_missing_file_is_model_corrupt(tiny, tmp_path, name):
    """Regression: without tokenizer.json transformers 5 silently built a 6-token tokenizer."""
    folder = copy_of(tiny, tmp_path)
    (folder / name).unlink()
    with pytest.raises(ModelCorrupt, match=f"{name}.*install\\.py --models florence2"):
        Florence2.load(folder)


def test_tokenizer_of_another_model_is_model_corrupt(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["image_token_id"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelCorrupt, match="<image> token"):
        Florence2.load(folder)


def test_close_frees_the_model(tiny):
    model = Florence2.load(tiny)
    model.close()
    assert model.model is None and model.processor is None
    with pytest.raises(RuntimeError, match="closed"):
        model.caption(image(0))



@pytest.fixture(scope="module")
def tiny_v5(tmp_path_factory):
    """The same tiny model saved the transformers-5 way: the image processor inside processor_config.json."""
    return build_florence2(tmp_path_factory.mktemp("florence2") / "tiny-v5", layout="transformers5")


def test_a_folder_saved_by_transformers_5_loads_and_captions_alike(tiny, tiny_v5, loaded):
    """Regression: the file check refused it for a missing preprocessor_config.json, which transformers does not need."""
    assert not (tiny_v5 / "preprocessor_config.json").exists()
    model = Florence2.load(tiny_v5, precision="fp32", device="cpu")
    try:
        rgb = image(5)
        assert model.caption(rgb, max_new_tokens=10, num_beams=1) == loaded.caption(rgb, max_new_tokens=10, num_beams=1)
        assert model.caption(rgb, max_new_tokens=10, num_beams=1) == direct_caption(tiny_v5, rgb, "<CAPTION>", 10, 1)
    finally:
        model.close()


def test_transformers_5_folder_without_its_image_processor_is_model_corrupt(tiny_v5, tmp_path):
    folder = copy_of(tiny_v5, tmp_path)
    config = json.loads((folder / "processor_config.json").read_text())
    del config["image_processor"]
    (folder / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelCorrupt, match=r"missing preprocessor_config.json \(or an image_processor entry"):
        Florence2.load(folder)


@pytest.mark.parametrize("damage", ["pickle", "remote code", "truncated", "no tokenizer", "no tokenizer_config"])
def test_transformers_5_folder_is_refused_for_the_same_reasons(tiny_v5, tmp_path, damage):
    folder = copy_of(tiny_v5, tmp_path)
    weights = folder / "model.safetensors"
    if damage == "pickle":
        weights.rename(folder / "pytorch_model.bin")
        match = "pickle files are never loaded"
    elif damage == "remote code":
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"}
        (folder / "config.json").write_text(json.dumps(config))
        match = "needs remote code"
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        match = "truncated"
    else:
        (folder / ("tokenizer.json" if damage == "no tokenizer" else "tokenizer_config.json")).unlink()
        match = "missing tokenizer"
    with pytest.raises(ModelCorrupt, match=match):
        Florence2.load(folder)
