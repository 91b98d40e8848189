"""The report PNG and Save Cutout Report called directly: chunk, sidecar, unsafe actions, matching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cutout_guard.core import report
from cutout_guard.core.errors import BadInput
from cutout_guard.comfyui.handle import ModelHandle
from cutout_guard.comfyui.report_nodes import SaveReport


@pytest.fixture
def output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTOUT_GUARD_OUTPUT_DIR", str(tmp_path / "output"))
    return tmp_path / "output"


def handle(info, seconds, **details):
    h = ModelHandle("test", lambda: None, info=info)
    h.done(seconds, **details)
    return h


def verdict(safe, p, codes=()):
    names = {"S1": "Violent Crimes", "S10": "Hate"}
    return json.dumps({"safe": safe, "p_unsafe": p, "threshold": 0.5, "categories": [{"code": c, "name": names[c]} for c in codes]})


def test_png_roundtrip_keeps_report_and_alpha():
    rgba = np.random.default_rng(0).random((7, 9, 4)).astype(np.float32)
    data = report.make_report(caption="a red chair — ünïcode", safe=True, p_unsafe=0.01, categories=[], threshold=0.5, unsafe_action="blur")
    png = report.encode_png(rgba, data)
    assert report.read_png(png) == data
    image = Image.open(__import__("io").BytesIO(png))
    assert image.mode == "RGBA" and image.size == (9, 7)
    assert set(data) == set(report.FIELDS)


def test_read_png_without_report_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError, match="no 'cutout_guard' text chunk"):
        report.read_png(path)


def test_save_node_writes_png_sidecar_and_lists_images(output_dir):
    images = torch.rand(2, 16, 24, 4)
    captions = ["a cat on a sofa", "a knife fight"]
    reports = [verdict(True, 0.02), verdict(False, 0.93, ("S1",))]
    result = SaveReport().save(
        [images], ["run/report"], ["withhold"], caption=captions, safety_report=reports,
        ben2=[handle({"model": "BEN2_Base.onnx", "provider": "CPU"}, [1.5, 1.6])],
        florence2=[handle({"model": "Florence-2-base", "precision": "fp32"}, [2.0, 2.1], task="<CAPTION>")],
        llama_guard=[handle({"model": "guard.gguf", "n_gpu_layers": 0}, [0.5, 0.6])],
    )
    saved = result["ui"]["images"]
    assert [s["filename"] for s in saved] == ["report_00001_.png", "report_00002_.png"]
    assert all(s["subfolder"] == "run" and s["type"] == "output" for s in saved)
    first = report.read_png(output_dir / "run" / saved[0]["filename"])
    second = report.read_png(output_dir / "run" / saved[1]["filename"])
    assert first["caption"] == "a cat on a sofa" and first["safe"] is True and first["task"] == "<CAPTION>"
    assert second["safe"] is False and second["categories"] == [{"code": "S1", "name": "Violent Crimes"}]
    assert second["unsafe_action"] == "withhold" and second["p_unsafe"] == pytest.approx(0.93)
    assert first["models"] == {"ben2": "BEN2_Base.onnx", "florence2": "Florence-2-base", "llama_guard": "guard.gguf"}
    assert first["devices"] == {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0}
    assert second["seconds"] == {"cutout": 1.6, "caption": 2.1, "safety_check": 0.6}
    sidecar = json.loads((output_dir / "run" / "report_00002_.json").read_text())
    assert sidecar == second
    kept = np.asarray(Image.open(output_dir / "run" / saved[0]["filename"]))
    np.testing.assert_allclose(kept / 255.0, images[0].numpy(), atol=1 / 255)
    withheld = np.asarray(Image.open(output_dir / "run" / saved[1]["filename"]))
    assert withheld.shape == (16, 24, 4) and withheld.max() == 0
    assert "UNSAFE" in result["ui"]["text"][1] and "S1 Violent Crimes" in result["ui"]["text"][1]
    # a second run continues the numbering instead of overwriting
    again = SaveReport().save([images[:1]], ["run/report"], ["keep"])
    assert again["ui"]["images"][0]["filename"] == "report_00003_.png"


def test_blur_changes_an_unsafe_image_and_keep_does_not(output_dir):
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.random((1, 32, 32, 3)).astype(np.float32))
    for action in ("blur", "keep"):
        saved = SaveReport().save([images], [action], [action], caption=["x"], safety_report=[verdict(False, 0.8, ("S10",))])["ui"]["images"][0]
        pixels = np.asarray(Image.open(output_dir / saved["filename"])) / 255.0
        difference = np.abs(pixels - images[0].numpy()).mean()
        assert (difference > 0.1) if action == "blur" else (difference < 0.01)
        assert report.read_png(output_dir / saved["filename"])["unsafe_action"] == action


def test_cutout_only_report_has_nulls_for_what_did_not_run(output_dir):
    saved = SaveReport().save([torch.rand(1, 8, 8, 4)], ["cut"], ["blur"], ben2=[handle({"model": "m.onnx", "provider": "CPU"}, [0.3])])
    data = report.read_png(output_dir / saved["ui"]["images"][0]["filename"])
    assert data["caption"] is None and data["safe"] is None and data["unsafe_action"] is None and data["categories"] is None
    assert data["models"]["ben2"] == "m.onnx" and data["models"]["florence2"] is None
    assert data["seconds"] == {"cutout": 0.3}


def test_count_mismatch_is_a_clear_error(output_dir):
    with pytest.raises(BadInput, match="3 images but 2 captions"):
        SaveReport().save([torch.rand(3, 8, 8, 3)], ["x"], ["keep"], caption=["a", "b"])


def test_empty_batch_is_a_clear_error(output_dir):
    with pytest.raises(BadInput, match="empty"):
        SaveReport().save([torch.zeros(0, 8, 8, 3)], ["x"], ["keep"])


def test_readme_client_reads_the_report():
    """The README's example client (Pillow only) reads what the save node writes."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def read_report" in b)
    namespace: dict = {}
    exec(block.split("# from ComfyUI")[0], namespace)  # the imports and read_report, not the network calls
    data = report.make_report(caption="a vase", safe=False, p_unsafe=0.7, categories=[{"code": "S1", "name": "Violent Crimes"}], threshold=0.5, unsafe_action="blur")
    assert namespace["read_report"](report.encode_png(np.zeros((4, 4, 4), np.float32), data)) == data


def test_blurring_a_cutout_does_not_reveal_the_removed_background():
    """Regression: the blur ran on straight (not premultiplied) RGBA, so the green background kept
    under alpha 0 in a cutout bled into the blurred subject."""
    rgba = np.zeros((64, 64, 4), np.float32)
    rgba[..., 1] = 1.0  # removed background: green, invisible
    rgba[16:48, 16:48] = (1.0, 0.0, 0.0, 1.0)  # the subject: opaque red
    blurred = report.apply_unsafe_action(rgba, "blur")
    assert blurred.shape == rgba.shape
    visible = blurred[..., 3] > 0.2
    assert visible.any() and blurred[..., 1][visible].max() < 0.01  # no green anywhere it shows
    assert np.abs(blurred[..., 3] - rgba[..., 3]).mean() > 0.02  # and it is really blurred
