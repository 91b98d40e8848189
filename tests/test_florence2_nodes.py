"""Florence-2 node adapters called directly: N images → N captions in order, RGBA inputs, progress,
cancel, keep_loaded, missing models and the default model's download from a local hub."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from cutout_guard import NODE_CLASS_MAPPINGS

from cutout_guard.comfyui import florence2_nodes, host

from cutout_guard.core import models
from cutout_guard.core.download import obtain
from cutout_guard.core.errors import BadInput, ModelCorrupt, ModelMissing
from cutout_guard.core.models import FLORENCE2, RemoteFile, lock_path
from devtools.synthetic.florence2 import build_florence2

CAPTION_ARGS = {"task": "<CAPTION>", "max_new_tokens": 10, "num_beams": 3}


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    return build_florence2(tmp_path_factory.mktemp("florence2") / "tiny")


@pytest.fixture
def tiny(models_dir, tiny_source):
    """The tiny model installed in the models folder as 'tiny'."""
    return shutil.copytree(tiny_source, models_dir / "florence2" / "tiny")


def batch(*seeds, height=40, width=56):
    return torch.from_numpy(np.stack([np.random.default_rng(s).random((height, width, 3)) for s in seeds]).astype(np.float32))


def direct_caption(folder, rgb_uint8, task="<CAPTION>", max_new_tokens=10, num_beams=3):
    """One image through transformers directly (the documented recipe), for reference."""
    from PIL import Image
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder)
    model = Florence2ForConditionalGeneration.from_pretrained(folder).eval()
    pil = Image.fromarray(rgb_uint8)
    inputs = processor(text=task, images=pil, return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    return processor.post_process_generation(processor.batch_decode(ids)[0], task=task, image_size=pil.size)[task]


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    return (frame.numpy() * 255).round().astype(np.uint8)


def load(model="tiny", precision="fp32", device="cpu", keep_loaded=True):
    return florence2_nodes.LoadFlorence2().load(model, precision, device, keep_loaded)[0]


def caption(handle, image, **options):
    return florence2_nodes.Caption().run(handle, image, **{**CAPTION_ARGS, **options})


def test_nodes_are_registered_with_fixed_ids():
    assert NODE_CLASS_MAPPINGS["CutoutGuardLoadFlorence2"] is florence2_nodes.LoadFlorence2
    assert NODE_CLASS_MAPPINGS["CutoutGuardCaption"] is florence2_nodes.Caption
    # output 0 stays the caption list (saved workflows link to it); the run report was added after it
    assert florence2_nodes.Caption.RETURN_TYPES == ("STRING", "STRING") and florence2_nodes.Caption.OUTPUT_IS_LIST == (True, True)
    assert florence2_nodes.Caption.RETURN_NAMES == ("caption", "report")
    required = florence2_nodes.Caption.INPUT_TYPES()["required"]
    assert required["task"][0] == ["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"]
    assert florence2_nodes.LoadFlorence2.INPUT_TYPES()["required"]["precision"][0] == ["fp32", "fp16", "bf16"]


def test_dropdown_lists_defaults_and_found_folders(tiny):
    choices = florence2_nodes.LoadFlorence2.INPUT_TYPES()["required"]["model"][0]
    assert choices[:2] == ["Florence-2-base", "Florence-2-large"] and "tiny" in choices


def test_n_images_give_n_captions_in_order(tiny):
    images = batch(0, 1, 2)
    result = caption(load(), images)
    captions = result["result"][0]
    expected = [direct_caption(tiny, to_uint8(images[i])) for i in range(3)]
    assert captions == expected
    assert len(set(expected)) >= 2  # the order is observable
    assert result["ui"]["text"] == captions
    handle = load()
    runs = [json.loads(r) for r in caption(handle, images, task="<DETAILED_CAPTION>")["result"][1]]
    assert handle.info == {"model": "tiny", "precision": "fp32", "device": "cpu"}  # what each run report copies
    assert [r["index"] for r in runs] == [0, 1, 2] and all(r["task"] == "<DETAILED_CAPTION>" for r in runs)
    assert all(r["model"] == "tiny" and r["precision"] == "fp32" and r["seconds"] > 0 for r in runs)
    reversed_captions = caption(load(), images.flip(0))["result"][0]
    assert reversed_captions == expected[::-1]


def test_rgba_is_composited_on_the_background(tiny):
    rgb = batch(3)
    alpha = torch.zeros(1, 40, 56, 1)
    alpha[:, 8:32, 10:40] = 1.0
    rgba = torch.cat([rgb, alpha], dim=-1)
    handle = load()
    got = caption(handle, rgba)["result"][0]
    on_white = rgb * alpha + (1 - alpha)
    assert got == [direct_caption(tiny, to_uint8(on_white[0]))]
    assert got != caption(handle, rgb)["result"][0]  # alpha was not dropped
    on_black = caption(handle, rgba, color="#000000")["result"][0]
    assert on_black == [direct_caption(tiny, to_uint8((rgb * alpha)[0]))]


def test_grey_image_is_expanded(tiny):
    grey = batch(4)[..., :1]
    assert caption(load(), grey)["result"][0] == [direct_caption(tiny, to_uint8(grey[0].repeat(1, 1, 3)))]


def test_empty_batch_is_a_clear_error(tiny):
    with pytest.raises(BadInput, match="empty"):
        caption(load(), torch.zeros(0, 8, 8, 3))


def test_bad_color_names_the_input(tiny):
    with pytest.raises(BadInput, match="'color' input"):
        caption(load(), batch(0), color="white")


def test_old_background_input_still_takes_effect(tiny, caplog):
    """'color' was called 'background'; an API prompt saved then still sets the colour (a hidden input)."""
    rgba = torch.cat([batch(3), torch.zeros(1, 40, 56, 1)], dim=-1)  # fully transparent: only the colour shows
    handle = load()
    assert "background" in florence2_nodes.Caption.INPUT_TYPES()["hidden"]
    old = caption(handle, rgba, background="#000000")["result"][0]
    assert old == [direct_caption(tiny, np.zeros((40, 56, 3), np.uint8))]
    assert "now called 'color'" in caplog.text


def test_progress_steps_once_per_image(tiny, monkeypatch):
    steps = []

    class Recording(host.Progress):
        def step(self):
            steps.append(self.value + 1)
            super().step()

    monkeypatch.setattr(host, "Progress", Recording)
    caption(load(), batch(0, 1, 2, 3))
    assert steps == [1, 2, 3, 4]


def test_cancel_stops_between_images(tiny, monkeypatch):
    class Interrupted(Exception):
        pass

    calls = {"checks": 0, "captions": 0}
    handle = load(keep_loaded=False)
    model = handle.get()
    real = model.caption

    def counting(*args, **kwargs):
        calls["captions"] += 1
        return real(*args, **kwargs)

    def check():
        calls["checks"] += 1
        if calls["checks"] == 3:
            raise Interrupted()

    monkeypatch.setattr(model, "caption", counting)
    monkeypatch.setattr(host, "check_interrupt", check)
    with pytest.raises(Interrupted):
        caption(handle, batch(0, 1, 2, 3))
    assert calls["captions"] == 2  # two images done, the third never started
    assert not handle.loaded  # keep_loaded off: released even after a cancel


def test_keep_loaded_switch(tiny):
    kept = load(keep_loaded=True)
    caption(kept, batch(0))
    caption(kept, batch(1))
    assert kept.loaded and kept.loads == 1
    freed = load(keep_loaded=False)
    assert not freed.loaded
    first = caption(freed, batch(0))["result"][0]
    assert not freed.loaded
    assert caption(freed, batch(0))["result"][0] == first and freed.loads == 3  # load node, then once per run


def test_fp16_on_cpu_node_runs_fp32_with_one_log_line(tiny, caplog):
    caplog.set_level(logging.INFO, logger="cutout_guard")
    handle = load(precision="fp16", device="cpu")
    assert handle.get().dtype == torch.float32 and handle.info["precision"] == "fp32"  # what ran, not what was asked
    assert len([r for r in caplog.records if "fp16" in r.getMessage() and "fp32" in r.getMessage()]) == 1
    assert caption(handle, batch(0))["result"][0] == caption(load(), batch(0))["result"][0]


def test_default_device_is_comfyuis(tiny, monkeypatch):
    monkeypatch.setattr(host, "torch_device", lambda: torch.device("cpu"))
    assert str(load(device="default").get().device) == "cpu"


def test_missing_user_model_names_folder_and_fix(models_dir):
    with pytest.raises(ModelMissing) as info:
        load("my-florence")
    message = str(info.value)
    assert str(models_dir / "florence2") in message and "Florence-2-base" in message


def test_missing_default_offline_names_folder_and_fix(models_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelMissing) as info:
        load("Florence-2-base")
    message = str(info.value)
    assert str(models_dir / "florence2" / "Florence-2-base") in message
    assert "install.py --models florence2" in message and "florence-community/Florence-2-base" in message


def serve(hub, folder, repo_id):
    for path in sorted(folder.iterdir()):
        hub.add(repo_id, path.name, path.read_bytes())


def unpinned(kind):
    """The kind with its published sizes and hashes removed (the tiny model stands in for the real one)."""
    defaults = tuple(
        dataclasses.replace(d, files=tuple(RemoteFile(f.filename) for f in d.files)) for d in kind.defaults
    )
    return dataclasses.replace(kind, defaults=defaults)


def test_default_model_downloads_from_the_hub_and_captions(hub, models_dir, tiny_source, monkeypatch):
    serve(hub, tiny_source, "florence-community/Florence-2-base")
    monkeypatch.setitem(models.KINDS, "florence2", unpinned(FLORENCE2))
    handle = load("Florence-2-base")
    target = models_dir / "florence2" / "Florence-2-base"
    listed = sorted(f.filename for f in FLORENCE2.default("Florence-2-base").files)
    assert sorted(p.name for p in target.iterdir()) == sorted(listed + [lock_path(target).name])
    assert [p.name for p in (models_dir / "florence2").iterdir()] == ["Florence-2-base"]  # no staging left
    lock = json.loads(lock_path(target).read_text())
    assert lock["repo_id"] == "florence-community/Florence-2-base" and sorted(lock["files"]) == listed
    weights = (tiny_source / "model.safetensors").read_bytes()
    assert lock["files"]["model.safetensors"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert caption(handle, batch(0))["result"][0] == [direct_caption(tiny_source, to_uint8(batch(0)[0]))]
    # the pinned revision was asked for; a second load finds the folder and asks the hub nothing
    assert any("00921df66db728a9ceb750f5eca43e5c203a2051" in path for _, path in hub.state.requests)
    before = len(hub.state.requests)
    load("Florence-2-base")
    assert len(hub.state.requests) == before


def test_published_hashes_reject_other_files(hub, models_dir, tiny_source):
    """The real pins stay on: the tiny files served as Florence-2-base never install."""
    serve(hub, tiny_source, "florence-community/Florence-2-base")
    with pytest.raises(ModelCorrupt, match="nothing was installed"):
        load("Florence-2-base")
    assert list((models_dir / "florence2").iterdir()) == []


def test_damaged_download_is_caught_on_the_next_load(hub, models_dir, tiny_source, monkeypatch):
    serve(hub, tiny_source, "florence-community/Florence-2-large")
    monkeypatch.setitem(models.KINDS, "florence2", unpinned(FLORENCE2))
    load("Florence-2-large")
    weights = models_dir / "florence2" / "Florence-2-large" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelCorrupt, match="model.safetensors"):
        load("Florence-2-large")


def test_download_works_with_huggingface_hub_0x(hub, models_dir, tiny_source, monkeypatch):
    """Regression: hf_hub_download of huggingface_hub 0.x (pinned by transformers 4.x) has no tqdm_class."""
    import huggingface_hub

    real = huggingface_hub.hf_hub_download

    def old_hf_hub_download(repo_id, filename, *, revision=None, local_dir=None, token=None, endpoint=None):
        return real(repo_id, filename, revision=revision, local_dir=local_dir, token=token, endpoint=endpoint)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", old_hf_hub_download)
    serve(hub, tiny_source, "florence-community/Florence-2-base")
    monkeypatch.setitem(models.KINDS, "florence2", unpinned(FLORENCE2))
    seen = []
    path = obtain(models.KINDS["florence2"], "Florence-2-base", [models_dir / "florence2"], progress=lambda d, t: seen.append((d, t)))
    assert (path / "model.safetensors").read_bytes() == (tiny_source / "model.safetensors").read_bytes()
    total = sum(p.stat().st_size for p in tiny_source.iterdir())
    assert len(seen) == 7 and seen[-1] == (total, total)  # progress once per file
