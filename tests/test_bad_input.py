"""Bad inputs reaching the nodes and the report writer: non-finite pixels, text that cannot be
UTF-8, zero-sized images, images over the pixel limit. Each gives a clear error naming the node
and input (or, for text, a written report saying what was replaced) — never a raw exception or a
NaN in an output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cutout_guard.comfyui import tensors
from cutout_guard.comfyui.ben2_nodes import RemoveBackground
from cutout_guard.comfyui.florence2_nodes import Caption
from cutout_guard.comfyui.handle import ModelHandle
from cutout_guard.comfyui.report_nodes import SaveReport
from cutout_guard.core import imageops, report
from cutout_guard.core.errors import BadInput
from cutout_guard.core.text import encodable

SURROGATE_CAPTION = "a cat \ud800 on a mat"


@pytest.fixture
def output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTOUT_GUARD_OUTPUT_DIR", str(tmp_path / "output"))
    return tmp_path / "output"


class NeverCalled:
    """A model handle whose model must not run: the input is refused first."""

    def get(self):
        raise AssertionError("the model ran on a bad input")

    def done(self, *args, **kwargs):
        pass


def corner_nan(value=float("nan"), channels=3):
    image = torch.rand(1, 12, 10, channels)
    image[0, :3, :3, 0] = value
    return image


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_remove_background_refuses_non_finite_pixels_naming_the_input(value):
    """Regression: NaN or Inf pixels gave a NaN mask and cutout."""
    with pytest.raises(BadInput, match=r"Remove Background \(BEN2\): input 'image' has NaN or infinite pixel values \(9 of 360"):
        RemoveBackground().run(NeverCalled(), corner_nan(value), "transparent", "#FFFFFF", False, "normalized")


def test_caption_refuses_non_finite_pixels_also_in_alpha():
    """Regression: Caption captioned a NaN image."""
    image = torch.rand(2, 8, 8, 4)
    image[1, 0, 0, 3] = float("nan")
    with pytest.raises(BadInput, match=r"Caption \(Florence-2\): input 'image' has NaN.*image 1 of the batch"):
        Caption().run(NeverCalled(), image, "<CAPTION>", 8, 1)


def test_save_report_refuses_non_finite_pixels_and_writes_nothing(output_dir):
    """Regression: a PNG with undefined pixels was saved."""
    with pytest.raises(BadInput, match="Save Cutout Report: input 'images' has NaN"):
        SaveReport().save([corner_nan()], ["x/report"], ["keep"])
    assert not output_dir.exists() or not any(output_dir.rglob("*.png"))


@pytest.mark.parametrize("shape", [(1, 0, 5, 4), (1, 5, 0, 3)])
def test_save_report_zero_height_or_width_is_a_clear_error(output_dir, shape):
    """Regression: a raw ValueError from the PNG writer."""
    with pytest.raises(BadInput, match="Save Cutout Report: input 'images'.*zero height or width"):
        SaveReport().save([torch.zeros(shape)], ["x/report"], ["blur"])


def test_frames_clip_without_changing_the_input_tensor():
    image = torch.rand(1, 300, 5, 4) * 1.5  # values over 1 are clipped in what is computed, not in the tensor
    before = image.clone()
    shown = tensors.shown_frame(image, 0, np.ones(3, np.float32))  # uint8, composited band by band
    array = np.clip(before[0].numpy().astype(np.float64), 0.0, 1.0)
    expected = np.round((array[..., :3] * array[..., 3:] + (1.0 - array[..., 3:])) * 255)  # on white, computed here
    assert shown.dtype == np.uint8 and np.abs(shown - expected).max() <= 1
    view = tensors.colour_view(image, 0)  # BEN2's input: no copy
    assert np.shares_memory(view, image.numpy())
    cutout = imageops.cutout(view, np.ones(view.shape[:2], np.float32))
    assert cutout[..., :3].max() <= 1.0 and np.allclose(cutout[..., :3], array[..., :3])
    assert torch.equal(image, before)


def test_save_report_writes_a_caption_with_a_lone_surrogate(output_dir):
    """Regression: UnicodeEncodeError and no PNG. The rest of the caption is kept, the report says what was replaced."""
    reports = [json.dumps({"safe": True, "p_unsafe": 0.1, "threshold": 0.5, "categories": []})]
    result = SaveReport().save([torch.rand(1, 6, 7, 4)], ["x/report"], ["blur"], caption=[SURROGATE_CAPTION], safety_report=reports)
    name = result["ui"]["images"][0]["filename"]
    png = output_dir / "x" / name
    embedded = report.read_png(png)
    sidecar = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    assert embedded == sidecar
    assert embedded["caption"] == "a cat \ufffd on a mat"
    assert embedded["replaced_text"] == {"caption": ["U+D800"]}
    assert "a cat \ufffd on a mat" in result["ui"]["text"][0]


def test_every_string_of_a_report_is_made_writable():
    text = {"safe": False, "p_unsafe": 0.9, "categories": [{"code": "S1", "name": "Vi\ud800olent"}]}
    data = report.make_report(caption="ok", models={"ben2": "b\udcffad.onnx"}, text=text)
    assert data["models"]["ben2"] == "b\ufffdad.onnx" and data["text"]["categories"][0]["name"] == "Vi\ufffdolent"
    assert data["replaced_text"] == {"models.ben2": ["U+DCFF"], "text.categories[0].name": ["U+D800"]}
    assert report.make_report(caption="fine")["replaced_text"] is None
    json.dumps(data, ensure_ascii=False).encode("utf-8")


def test_encodable_reports_paths_and_keeps_unchanged_values():
    value = {"a": ["x", "y\udc80z"], "b": 3}
    clean, replaced = encodable(value)
    assert clean == {"a": ["x", "y\ufffdz"], "b": 3} and replaced == {"a[1]": ["U+DC80"]}
    same = {"a": ["x"]}
    assert encodable(same)[0] is same


def test_nodes_refuse_images_over_the_pixel_limit_before_running(monkeypatch):
    monkeypatch.setenv(tensors.MAX_PIXELS_VARIABLE, "100")
    with pytest.raises(BadInput, match=r"input 'image': image too large \(11×10 = 110 pixels\).*100 pixels \(CUTOUT_GUARD_MAX_PIXELS\)"):
        RemoveBackground().run(NeverCalled(), torch.rand(1, 10, 11, 3), "transparent", "#FFFFFF", False, "normalized")
    monkeypatch.setenv(tensors.MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(BadInput, match="CUTOUT_GUARD_MAX_PIXELS='lots' is not a whole number"):
        tensors.batch_size(torch.rand(1, 2, 2, 3))
