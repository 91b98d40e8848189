"""BEN2 node adapters called directly: batches, mask polarity, background fill, loading once."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cutout_guard.comfyui import ben2_nodes
from cutout_guard.core.errors import BadInput, DeviceUnavailable
from cutout_guard.core.models import BEN2
from devtools.synthetic.ben2 import build_ben2


@pytest.fixture
def ben2_file(models_dir):
    """A tiny BEN2-signature model installed in the models folder as 'tiny.onnx'."""
    return build_ben2(models_dir / "ben2" / "tiny.onnx", size=64)


def subject_image(batch=1, height=48, width=80):
    """Left half bright blue (the tiny model scores it high), right half red (scored low)."""
    image = torch.zeros(batch, height, width, 3)
    image[:, :, : width // 2, 2] = 1.0
    image[:, :, width // 2 :, 0] = 1.0
    return image


def load(model="tiny.onnx", provider="CPU", keep_loaded=True):
    return ben2_nodes.LoadBEN2().load(model, provider, keep_loaded)[0]


def remove(handle, image, **options):
    args = {"background": "transparent", "color": "#FFFFFF", "refine_foreground": False, "mask_values": "normalized"}
    args.update(options)
    return ben2_nodes.RemoveBackground().run(handle, image, **args)[:2]  # cutout, mask (the report: below)


def test_each_image_has_its_run_report(ben2_file):
    image = subject_image(batch=3)
    *_, reports = ben2_nodes.RemoveBackground().run(load(), image, "transparent", "#FFFFFF", False, "normalized")
    runs = [json.loads(r) for r in reports]
    assert [r["index"] for r in runs] == [0, 1, 2] and all(r["stage"] == "cutout" for r in runs)
    assert all(r["model"] == "tiny.onnx" and r["provider"] == "CPU" and r["seconds"] > 0 for r in runs)


def test_dropdown_lists_default_and_found_models(ben2_file):
    choices = ben2_nodes.LoadBEN2.INPUT_TYPES()["required"]["model"][0]
    assert choices[0] == "BEN2_Base.onnx" and "tiny.onnx" in choices


def test_batch_gives_rgba_cutouts_and_subject_masks(ben2_file):
    handle = load()
    image = subject_image(batch=3)
    cutout, mask = remove(handle, image)
    assert cutout.shape == (3, 48, 80, 4) and mask.shape == (3, 48, 80)
    assert cutout.dtype == torch.float32 and mask.dtype == torch.float32
    # polarity: 1.0 = subject (left half), 0.0 = background (right half)
    assert mask[:, :, :30].mean() > 0.9 and mask[:, :, 50:].mean() < 0.1
    torch.testing.assert_close(cutout[..., 3], mask)
    torch.testing.assert_close(cutout[..., :3], image)


def test_rgba_input_uses_its_colour_channels(ben2_file):
    handle = load()
    rgb = subject_image()
    rgba = torch.cat([rgb, torch.zeros(1, 48, 80, 1)], dim=-1)  # alpha 0 must be ignored
    torch.testing.assert_close(remove(handle, rgba)[1], remove(handle, rgb)[1])


def test_colour_background_composites(ben2_file):
    cutout, mask = remove(load(), subject_image(), background="color", color="#00FF00")
    assert cutout.shape == (1, 48, 80, 3)
    expected = subject_image() * mask[..., None] + torch.tensor([0.0, 1.0, 0.0]) * (1 - mask[..., None])
    torch.testing.assert_close(cutout, expected)


def test_bad_colour_names_the_input(ben2_file):
    with pytest.raises(BadInput, match="'color' input"):
        remove(load(), subject_image(), background="color", color="green")


def test_empty_batch_is_a_clear_error(ben2_file):
    with pytest.raises(BadInput, match="empty"):
        remove(load(), torch.zeros(0, 8, 8, 3))


def test_raw_mask_values(ben2_file):
    """The tiny model's map is sigmoid(2r - 1.5g + 3b - 1): blue (subject) 1/(1+e^-2), red 1/(1+e^-1).
    Raw keeps those probabilities; normalized stretches them to 1 and 0."""
    _, normalized = remove(load(), subject_image())
    _, raw = remove(load(), subject_image(), mask_values="raw")
    torch.testing.assert_close(raw[:, :, :30], torch.full((1, 48, 30), 0.8807971), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, :, 50:], torch.full((1, 48, 30), 0.7310586), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalized[:, :, :30], torch.ones(1, 48, 30), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalized[:, :, 50:], torch.zeros(1, 48, 30), atol=1e-5, rtol=0)


def test_refine_foreground_changes_only_colours(ben2_file):
    plain, mask = remove(load(), subject_image())
    refined, mask2 = remove(load(), subject_image(), refine_foreground=True)
    torch.testing.assert_close(mask, mask2)
    torch.testing.assert_close(refined[..., 3], plain[..., 3])
    opaque = mask[0] > 0.99
    torch.testing.assert_close(refined[0][opaque], plain[0][opaque])  # the solid subject keeps its colour
    # soft edge pixels on the red side show the subject (blue) instead of the old background's red
    edge = (mask[0] > 0.05) & (mask[0] < 0.95)
    edge[:, :40] = False
    assert edge.sum() >= 48
    assert (plain[0][edge][:, 0] == 1).all() and (plain[0][edge][:, 2] == 0).all()
    assert (refined[0][edge][:, 2] > 0.5).all() and (refined[0][edge][:, 0] < 0.5).all()


def test_second_run_loads_nothing_and_keep_loaded_off_releases(ben2_file):
    kept = load(keep_loaded=True)
    remove(kept, subject_image())
    remove(kept, subject_image())
    assert kept.loads == 1 and kept.loaded

    released = load(keep_loaded=False)
    assert not released.loaded  # the loader checked the model, then let it go
    remove(released, subject_image())
    assert not released.loaded and released.loads == 2


def test_provider_switch_takes_effect(ben2_file, monkeypatch):
    import onnxruntime

    handle = load(provider="CPU")
    assert handle.get().session.get_providers() == ["CPUExecutionProvider"]  # what the session runs on
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert load(provider="CUDA").get().session.get_providers()[0] == "CUDAExecutionProvider"
        return
    with pytest.raises(DeviceUnavailable, match="no CUDA provider"):
        load(provider="CUDA")
    # an onnxruntime that lists CUDA but cannot run it: the session falls back to the CPU, and the
    # loader reads that from the session instead of trusting the setting
    available = onnxruntime.get_available_providers()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *available])
    with pytest.warns(UserWarning, match="not in available provider"), pytest.raises(DeviceUnavailable, match="fell back to the CPU"):
        load(provider="CUDA")


def test_missing_user_model_names_folder(models_dir):
    from cutout_guard.core.errors import ModelMissing

    with pytest.raises(ModelMissing) as info:
        load(model="nope.onnx")
    assert str(models_dir / "ben2" / "nope.onnx") in str(info.value)


def test_missing_default_model_offline_names_path_and_command(models_dir, monkeypatch):
    from cutout_guard.core.errors import ModelMissing

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelMissing) as info:
        load(model=BEN2.defaults[0].name)
    message = str(info.value)
    assert str(models_dir / "ben2") in message
    assert "install.py --models ben2" in message and "huggingface.co/PramaLLC/BEN2" in message


def test_cancel_stops_between_images_and_still_releases(ben2_file, monkeypatch):
    from cutout_guard.comfyui import host

    class Interrupted(Exception):
        pass

    handle = load(keep_loaded=False)
    model = handle.get()
    mattes = []
    real = model.matte
    monkeypatch.setattr(model, "matte", lambda rgb, **kw: mattes.append(1) or real(rgb, **kw))

    def check():
        if len(mattes) == 2:
            raise Interrupted()

    monkeypatch.setattr(host, "check_interrupt", check)
    with pytest.raises(Interrupted):
        remove(handle, subject_image(batch=4))
    assert len(mattes) == 2  # two images done, the third never started
    assert not handle.loaded  # keep_loaded off: released even after a cancel


def test_progress_steps_once_per_image(ben2_file, monkeypatch):
    from cutout_guard.comfyui import host

    steps = []
    monkeypatch.setattr(host.Progress, "step", lambda self: steps.append(self.total))
    remove(load(), subject_image(batch=3))
    assert steps == [3, 3, 3]
