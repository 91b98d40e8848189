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


def handle(info):
    return ModelHandle("test", lambda: None, info=info)


def verdict(safe, p, codes=(), **extra):
    names = {"S1": "Violent Crimes", "S10": "Hate"}
    return json.dumps({"safe": safe, "p_unsafe": p, "threshold": 0.5, "categories": [{"code": c, "name": names[c]} for c in codes], **extra})


def run(stage, seconds, **info):
    return json.dumps({"stage": stage, **info, "seconds": seconds})


def test_png_roundtrip_keeps_report_and_alpha():
    rgba = np.random.default_rng(0).random((7, 9, 4)).astype(np.float32)
    text = report.read_verdict(verdict(True, 0.01), what="test")
    data = report.make_report(caption="a red chair — ünïcode", text=text, unsafe_action="blur")
    png = report.encode_png(rgba, data)
    assert report.read_png(png) == data
    image = Image.open(__import__("io").BytesIO(png))
    assert image.mode == "RGBA" and image.size == (9, 7)
    assert set(data) == set(report.FIELDS) and data["schema"] == 2


def test_read_png_without_report_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError, match="no 'cutout_guard' text chunk"):
        report.read_png(path)


def _png_with_chunk(text: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(report.CHUNK, text)
    buffer = __import__("io").BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize("text, message", [("{not json", "not JSON"), ("[1, 2]", "JSON list"), ('{"schema": 3}', "unsupported report schema 3")])
def test_read_png_with_a_damaged_report_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        report.read_png(_png_with_chunk(text))


def test_save_node_writes_png_sidecar_and_lists_images(output_dir):
    images = torch.rand(2, 16, 24, 4)
    captions = ["a cat on a sofa", "a knife fight"]
    reports = [verdict(True, 0.02, model="guard.gguf", n_gpu_layers=0, seconds=0.5),
               verdict(False, 0.93, ("S1",), model="guard.gguf", n_gpu_layers=0, seconds=0.6)]
    image_reports = [verdict(True, 0.1, label="normal", model="nsfw_image_detection", precision="fp32", seconds=0.2),
                     verdict(True, 0.2, label="normal", model="nsfw_image_detection", precision="fp32", seconds=0.25)]
    result = SaveReport().save(
        [images], ["run/report"], ["withhold"], caption=captions, safety_report=reports, image_report=image_reports,
        cutout_report=[run("cutout", 1.5, model="BEN2_Base.onnx", provider="CPU"), run("cutout", 1.6, model="BEN2_Base.onnx", provider="CPU")],
        caption_report=[run("caption", t, model="Florence-2-base", precision="fp32", task="<CAPTION>") for t in (2.0, 2.1)],
    )
    saved = result["ui"]["images"]
    assert [s["filename"] for s in saved] == ["report_00001_.png", "report_00002_.png"]
    assert all(s["subfolder"] == "run" and s["type"] == "output" for s in saved)
    first = report.read_png(output_dir / "run" / saved[0]["filename"])
    second = report.read_png(output_dir / "run" / saved[1]["filename"])
    assert first["caption"] == "a cat on a sofa" and first["safe"] is True and first["task"] == "<CAPTION>"
    assert first["image"]["safe"] is True and first["image"]["label"] == "normal" and first["text"]["safe"] is True
    assert second["safe"] is False and second["text"]["categories"] == [{"code": "S1", "name": "Violent Crimes"}]
    assert second["image"]["safe"] is True  # the text check alone makes it unsafe
    assert second["unsafe_action"] == "withhold" and second["text"]["p_unsafe"] == pytest.approx(0.93)
    assert first["models"] == {"ben2": "BEN2_Base.onnx", "florence2": "Florence-2-base", "llama_guard": "guard.gguf",
                               "image_guard": "nsfw_image_detection"}
    assert first["devices"] == {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0}
    assert second["seconds"] == {"cutout": 1.6, "image_check": 0.25, "caption": 2.1, "safety_check": 0.6}
    sidecar = json.loads((output_dir / "run" / "report_00002_.json").read_text())
    assert sidecar == second
    kept = np.asarray(Image.open(output_dir / "run" / saved[0]["filename"]))
    np.testing.assert_allclose(kept / 255.0, images[0].numpy(), atol=1 / 255)
    withheld = np.asarray(Image.open(output_dir / "run" / saved[1]["filename"]))
    assert withheld.shape == (16, 24, 4) and withheld.max() == 0
    text = result["ui"]["text"]
    assert "UNSAFE" in text[1] and "S1 Violent Crimes" in text[1] and "image safe" in text[1] and "text UNSAFE" in text[1]
    assert text[0].startswith("[0] SAFE") and "image safe (p_unsafe 0.10)" in text[0]
    # a second run continues the numbering instead of overwriting
    again = SaveReport().save([images[:1]], ["run/report"], ["keep"])
    assert again["ui"]["images"][0]["filename"] == "report_00003_.png"


def test_the_image_check_alone_makes_an_image_unsafe(output_dir):
    images = torch.from_numpy(np.random.default_rng(2).random((1, 32, 32, 3)).astype(np.float32))
    saved = SaveReport().save([images], ["img"], ["blur"], image_report=[verdict(False, 0.97, label="nsfw")])
    data = report.read_png(output_dir / saved["ui"]["images"][0]["filename"])
    assert data["safe"] is False and data["image"]["safe"] is False and data["text"] is None and data["caption"] is None
    pixels = np.asarray(Image.open(output_dir / saved["ui"]["images"][0]["filename"])) / 255.0
    assert np.abs(pixels - images[0].numpy()).mean() > 0.1  # blurred


def _saved_verdict(output_dir, safety_report, action="withhold"):
    """Save one random image with this safety report; (the report as written, the PNG's pixels, the input)."""
    images = torch.from_numpy(np.random.default_rng(4).random((1, 16, 16, 3)).astype(np.float32))
    saved = SaveReport().save([images], ["fail"], [action], caption=["a cat"], safety_report=[safety_report])
    name = saved["ui"]["images"][0]["filename"]
    return report.read_png(output_dir / name), np.asarray(Image.open(output_dir / name)), saved["ui"]["text"][0]


@pytest.mark.parametrize(
    "safety_report, why",
    [
        ('{"safe": "false", "p_unsafe": 0.97}', "'safe': \"false\""),  # a string
        ('{"safe": 1, "p_unsafe": 0.01}', "'safe': 1"),  # a number
        ('{"safe": true}', "no 'p_unsafe'"),  # a missing field (the node used to crash after writing)
        ('{"p_unsafe": 0.01}', "no 'safe'"),
        ('{"safe": true, "p_unsafe": "0.01"}', "not a probability"),
        ('{"safe": true, "p_unsafe": 1.7}', "not a probability"),
        ("not json at all", "not JSON"),  # unparseable
        ('[{"safe": true, "p_unsafe": 0.0}]', "JSON list"),  # a list
        ('{"safe": true, "p_unsafe": 0.01, "categories": "S1"}', "categories"),
    ],
)
def test_a_malformed_safety_report_is_unsafe_and_withheld(output_dir, safety_report, why):
    """Regression: Save read the verdict leniently — {"safe": "false"} was saved as safe and shown,
    a missing p_unsafe wrote a PNG marked safe and then crashed, non-JSON raised a raw error."""
    data, pixels, line = _saved_verdict(output_dir, safety_report)
    assert data["safe"] is False and data["text"]["safe"] is False
    assert why in data["text"]["reason"] and "unsafe by default" in data["text"]["reason"]
    assert pixels.max() == 0  # withheld: the unsafe action applied
    assert "UNSAFE" in line


def test_a_blank_caption_keeps_its_reason(output_dir):
    data, pixels, line = _saved_verdict(output_dir, json.dumps({"safe": False, "p_unsafe": None, "reason": "the text is empty"}))
    assert data["text"] == {"model": None, "safe": False, "p_unsafe": None, "threshold": None, "reason": "the text is empty",
                            "categories": []}
    assert pixels.max() == 0 and "UNSAFE" in line


def test_a_malformed_image_report_is_unsafe_too(output_dir):
    images = torch.rand(1, 8, 8, 3)
    saved = SaveReport().save([images], ["x"], ["withhold"], image_report=['{"safe": "true", "p_unsafe": 0.0}'])
    data = report.read_png(output_dir / saved["ui"]["images"][0]["filename"])
    assert data["safe"] is False and "image report 0" in data["image"]["reason"]


def test_every_verdict_is_decided_before_the_first_file_is_written(output_dir, monkeypatch):
    """A report that cannot be made for image 2 leaves no file for image 1 (nothing half-saved as safe)."""
    real = report.make_report
    calls = []

    def failing(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(**kwargs)

    monkeypatch.setattr(report, "make_report", failing)
    with pytest.raises(RuntimeError, match="boom"):
        SaveReport().save([torch.rand(2, 8, 8, 3)], ["order"], ["blur"], safety_report=[verdict(True, 0.1)] * 2)
    assert not list(output_dir.rglob("*.png")) and not list(output_dir.rglob("*.json"))


def test_deprecated_loader_inputs_still_record_models_and_devices(output_dir):
    """A workflow saved before the per-image reports (loaders wired into Save) still runs."""
    saved = SaveReport().save(
        [torch.rand(1, 8, 8, 4)], ["legacy"], ["blur"], caption=["a cat"], safety_report=[verdict(True, 0.1)],
        ben2=[handle({"model": "m.onnx", "provider": "CPU"})],
        florence2=[handle({"model": "Florence-2-base", "precision": "fp32", "device": "cpu"})],
        llama_guard=[handle({"model": "guard.gguf", "n_gpu_layers": 0})],
    )
    data = report.read_png(output_dir / saved["ui"]["images"][0]["filename"])
    assert data["models"]["ben2"] == "m.onnx" and data["models"]["florence2"] == "Florence-2-base"
    assert data["models"]["llama_guard"] == "guard.gguf" and data["text"]["model"] == "guard.gguf"
    assert data["devices"] == {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0}
    assert data["safe"] is True and data["seconds"] == {}


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
    saved = SaveReport().save([torch.rand(1, 8, 8, 4)], ["cut"], ["blur"], cutout_report=[run("cutout", 0.3, model="m.onnx", provider="CPU")])
    data = report.read_png(output_dir / saved["ui"]["images"][0]["filename"])
    assert data["caption"] is None and data["safe"] is None and data["unsafe_action"] is None
    assert data["image"] is None and data["text"] is None
    assert data["models"]["ben2"] == "m.onnx" and data["models"]["florence2"] is None
    assert data["seconds"] == {"cutout": 0.3}
    assert "NOT CHECKED" in saved["ui"]["text"][0]


def test_count_mismatch_is_a_clear_error(output_dir):
    with pytest.raises(BadInput, match="3 images but 2 captions"):
        SaveReport().save([torch.rand(3, 8, 8, 3)], ["x"], ["keep"], caption=["a", "b"])


def test_empty_batch_is_a_clear_error(output_dir):
    with pytest.raises(BadInput, match="empty"):
        SaveReport().save([torch.zeros(0, 8, 8, 3)], ["x"], ["keep"])


def _readme_client(tmp_path):
    """The README's example client (the imports and read_report, not the network calls) as a module."""
    import re
    import runpy
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def read_report" in b)
    client = tmp_path / "readme_client.py"
    client.write_text(block.split("# from ComfyUI")[0])
    return runpy.run_path(str(client))


def test_readme_client_reads_the_report(tmp_path):
    """The README's example client (Pillow only) reads what the save node writes, schema 2 and 1."""
    client = _readme_client(tmp_path)
    checks = {"image": report.read_verdict(verdict(True, 0.2, label="normal"), what="t"),
              "text": report.read_verdict(verdict(False, 0.7, ("S1",)), what="t")}
    data = report.make_report(caption="a vase", unsafe_action="blur", **checks)
    png = report.encode_png(np.zeros((4, 4, 4), np.float32), data)
    assert client["read_report"](png) == data
    assert client["is_safe"](data) is False
    safe = report.make_report(caption="a vase", unsafe_action="blur", image=checks["image"])
    assert client["is_safe"](safe) is True
    assert client["is_safe"]({**safe, "safe": "true"}) is False  # only JSON true is safe
    assert client["is_safe"](SCHEMA_1) is False and client["is_safe"]({**SCHEMA_1, "safe": True}) is True


SCHEMA_1 = {
    "schema": 1, "caption": "a vase", "task": "<CAPTION>", "safe": False, "p_unsafe": 0.7,
    "categories": [{"code": "S1", "name": "Violent Crimes"}], "threshold": 0.5, "unsafe_action": "blur",
    "models": {"ben2": None, "florence2": "Florence-2-base", "llama_guard": "guard.gguf"},
    "devices": {"provider": None, "precision": "fp32", "n_gpu_layers": 0}, "seconds": {"caption": 1.0},
}


def test_schema_1_reports_still_read_and_upgrade():
    png = report.encode_png(np.zeros((4, 4, 3), np.float32), SCHEMA_1)
    assert report.read_png(png) == SCHEMA_1
    upgraded = report.upgrade(SCHEMA_1)
    assert upgraded["schema"] == 2 and upgraded["safe"] is False and upgraded["image"] is None
    assert upgraded["text"] == {"model": "guard.gguf", "safe": False, "p_unsafe": 0.7, "threshold": 0.5, "reason": None,
                                "categories": [{"code": "S1", "name": "Violent Crimes"}]}
    assert report.upgrade({**SCHEMA_1, "safe": None})["text"] is None
    assert report.report_safe({**SCHEMA_1, "safe": "true"}) is False


def test_report_safe_accepts_only_json_true_backed_by_every_check():
    image = report.read_verdict(verdict(True, 0.1), what="t")
    text = report.read_verdict(verdict(True, 0.1), what="t")
    data = report.make_report(image=image, text=text, unsafe_action="blur")
    assert data["safe"] is True and report.report_safe(data) is True
    assert report.report_safe({**data, "safe": "true"}) is False
    assert report.report_safe({**data, "text": {**text, "safe": "true"}}) is False
    assert report.report_safe({**data, "image": None, "text": None}) is False  # says safe, shows no check
    nothing = report.make_report()
    assert nothing["safe"] is None and report.report_safe(nothing) is None
    # a check that did not run never makes the image safe: one unsafe check is enough
    assert report.make_report(image=image, text=report.read_verdict("{}", what="t"))["safe"] is False


def test_blurring_a_cutout_does_not_reveal_the_removed_background():
    """Regression: the blur ran on straight (not premultiplied) RGBA, so the green background kept
    under alpha 0 in a cutout bled into the blurred subject."""
    rgba = np.zeros((64, 64, 4), np.float32)
    rgba[..., 1] = 1.0  # removed background: green, invisible
    rgba[16:48, 16:48] = (1.0, 0.0, 0.0, 1.0)  # the subject: opaque red
    blurred = report.apply_unsafe_action(rgba, "blur").astype(np.float32) / 255  # uint8 out
    assert blurred.shape == rgba.shape
    visible = blurred[..., 3] > 0.2
    assert visible.any() and blurred[..., 1][visible].max() < 0.01  # no green anywhere it shows
    assert np.abs(blurred[..., 3] - rgba[..., 3]).mean() > 0.02  # and it is really blurred


def test_a_large_image_is_blurred_at_a_bounded_resolution(monkeypatch):
    """Regression (memory): the blur ran float64 cumulative sums over the whole image, ~230 bytes per
    pixel at 48 MP. Now every box blur runs on at most BLUR_MAX_SIDE² pixels and the result is uint8."""
    seen = []
    box_blur = report.imageops.box_blur
    monkeypatch.setattr(report.imageops, "box_blur", lambda image, radius, **kw: seen.append(image.shape) or box_blur(image, radius, **kw))
    height, width = 1500, 2 * report.BLUR_MAX_SIDE + 100
    rgba = np.zeros((height, width, 4), np.float32)
    rgba[..., 1] = 1.0                                   # removed background: green, invisible
    rgba[500:1000, 800:1600] = (1.0, 0.0, 0.0, 1.0)      # the subject: opaque red
    blurred = report.apply_unsafe_action(rgba, "blur")
    assert blurred.dtype == np.uint8 and blurred.shape == rgba.shape
    assert seen and all(max(shape[:2]) <= report.BLUR_MAX_SIDE for shape in seen)
    visible = blurred[..., 3] > 51
    assert visible.any() and blurred[..., 1][visible].max() <= 2          # still no green where it shows
    centre = blurred[750, 1200].astype(int)
    assert centre[0] > 200 and centre[3] > 200                            # the subject's middle stays red and opaque
    edge = blurred[750, 800 - 100:800 + 100, 3].astype(int)
    assert edge.min() < 100 < edge.max() and np.all(np.diff(edge) >= -2)  # its edge fades smoothly over 200 px
    assert report.apply_unsafe_action(rgba, "withhold").max() == 0


def test_blurring_a_uint8_cutout_matches_blurring_its_float_values():
    """The CLI's cutout is uint8 (what the PNG stores): blurring it gives what blurring the same
    values as floats gives (regression guard against uint8 overflow in the premultiplication)."""
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (90, 120, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[20:70, 30:90, 3] = 255
    from_uint8 = report.apply_unsafe_action(rgba, "blur")
    from_float = report.apply_unsafe_action(rgba.astype(np.float32) / 255, "blur")
    assert from_uint8.dtype == np.uint8
    assert np.abs(from_uint8.astype(int) - from_float.astype(int)).max() <= 1


GRAPH_PROMPT = {"1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}}
GRAPH_WORKFLOW = {"nodes": [{"id": 1, "type": "LoadImage"}], "links": [], "version": 0.4}


def _text_chunks(png) -> dict:
    with Image.open(png) as image:
        image.load()
        return dict(image.text)


def test_the_png_carries_the_graph_like_saveimage_so_it_drags_back(output_dir):
    """The prompt and the frontend's workflow as ComfyUI's SaveImage writes them (tEXt, JSON), beside the report."""
    result = SaveReport().save([torch.rand(1, 8, 9, 4)], ["graph/report"], ["keep"], caption=["a cat"],
                               safety_report=[verdict(True, 0.1)], prompt=[GRAPH_PROMPT], extra_pnginfo=[{"workflow": GRAPH_WORKFLOW}])
    png = output_dir / "graph" / result["ui"]["images"][0]["filename"]
    chunks = _text_chunks(png)
    assert json.loads(chunks["prompt"]) == GRAPH_PROMPT and json.loads(chunks["workflow"]) == GRAPH_WORKFLOW
    assert report.read_png(png)["caption"] == "a cat"


def test_disable_metadata_drops_the_graph_never_the_report(output_dir, monkeypatch):
    import sys
    import types

    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(disable_metadata=True)
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    result = SaveReport().save([torch.rand(1, 8, 9, 3)], ["graph/report"], ["keep"], caption=["a cat"],
                               safety_report=[verdict(True, 0.1)], prompt=[GRAPH_PROMPT], extra_pnginfo=[{"workflow": GRAPH_WORKFLOW}])
    png = output_dir / "graph" / result["ui"]["images"][0]["filename"]
    chunks = _text_chunks(png)
    assert "prompt" not in chunks and "workflow" not in chunks
    assert report.read_png(png)["caption"] == "a cat"
