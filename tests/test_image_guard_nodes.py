"""Image guard node adapters called directly: N images → N verdicts in order, RGBA on the background,
empty batch, cancel between images, keep_loaded, the model kind, offline and download errors, and a
loader feeding two apply nodes whose reports Save Cutout Report keeps apart."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from devtools.synthetic.image_guard import build_image_guard  # noqa: E402

from cutout_guard import NODE_CLASS_MAPPINGS  # noqa: E402
from cutout_guard.comfyui import host, image_guard_nodes as nodes  # noqa: E402
from cutout_guard.comfyui.report_nodes import SaveReport  # noqa: E402
from cutout_guard.core import report  # noqa: E402
from cutout_guard.core.errors import BadInput, DeviceUnavailable, ModelMissing  # noqa: E402
from cutout_guard.core.models import IMAGE_GUARD, get_kind  # noqa: E402


@pytest.fixture(scope="module")
def red_source(tmp_path_factory):
    return build_image_guard(tmp_path_factory.mktemp("image_guard") / "red", weights="red")


@pytest.fixture
def red(models_dir, red_source):
    return shutil.copytree(red_source, models_dir / "image_guard" / "red")


def load(model="red", precision="fp32", device="cpu", keep_loaded=True):
    return nodes.LoadImageGuard().load(model, precision, device, keep_loaded)[0]


def check(handle, image, threshold=0.5, **options):
    result = nodes.ImageCheck().run(handle, image, threshold, **options)
    assert result["ui"]["text"] == result["result"][2]
    return result["result"]


def colours(*rgbs, size=32):
    return torch.stack([torch.ones(size, size, 3) * torch.tensor(c, dtype=torch.float32) for c in rgbs])


def test_nodes_are_registered_with_fixed_ids_and_the_kind_has_its_folder():
    assert NODE_CLASS_MAPPINGS["CutoutGuardLoadImageGuard"] is nodes.LoadImageGuard
    assert NODE_CLASS_MAPPINGS["CutoutGuardImageCheck"] is nodes.ImageCheck
    assert nodes.LoadImageGuard.CATEGORY == nodes.ImageCheck.CATEGORY == "Cutout Guard"
    kind = get_kind("image_guard")
    assert kind is IMAGE_GUARD and kind.folder_key == "image_guard" and kind.is_folder
    default = kind.defaults[0]
    assert default.repo_id == "Falconsai/nsfw_image_detection" and default.revision == "4ea924a80cd71a53597a14eead839aff6942f2c9"
    weights = next(f for f in default.files if f.filename == "model.safetensors")
    assert weights.sha256 == "97b2ce64ec146884b37f98ee7944ca4891aa72f6827dc0cb10684a1cbecd5830" and weights.size == 343_223_968
    assert not any(f.filename.endswith((".bin", ".pt")) for f in default.files)  # never a pickle


def test_n_images_give_n_verdicts_in_order(red):
    order = [(1, 0, 0), (0, 0, 1), (1, 0.2, 0.1), (1, 1, 1), (0.9, 0, 0)]
    safe, p_unsafe, reports = check(load(), colours(*order))
    assert safe == [False, True, False, True, False]
    assert [p > 0.99 for p in p_unsafe] == [True, False, True, False, True]
    runs = [json.loads(r) for r in reports]
    assert [r["index"] for r in runs] == list(range(5)) and all(r["stage"] == "image_check" for r in runs)
    assert [r["safe"] for r in runs] == safe and [r["label"] for r in runs] == ["nsfw", "normal", "nsfw", "normal", "nsfw"]
    assert all(r["model"] == "red" and r["precision"] == "fp32" and r["device"] == "cpu" and r["seconds"] > 0 for r in runs)
    assert check(load(), colours(*order[::-1]))[0] == safe[::-1]


def test_a_cutout_is_judged_on_the_background_it_is_shown_on(red):
    """Red colours hidden under alpha 0 (a removed background) are not what gets published."""
    rgba = torch.zeros(1, 32, 32, 4)
    rgba[..., 0] = 1.0  # red everywhere ...
    rgba[:, :8, :8, 3] = 1.0  # ... but only one corner is visible
    assert check(load(), rgba)[0] == [True]  # judged on white: mostly white
    assert check(load(), rgba, color="#FF0000")[0] == [False]  # judged on red
    with pytest.raises(BadInput, match="'color' input of Image Check"):
        check(load(), rgba, color="red")


def test_empty_batch_is_a_clear_error(red):
    with pytest.raises(BadInput, match="empty"):
        check(load(), torch.zeros(0, 8, 8, 3))


def test_cancel_stops_between_images_and_still_releases(red, monkeypatch):
    class Interrupted(Exception):
        pass

    handle = load(keep_loaded=False)
    model = handle.get()
    seen = []
    real = model.check
    monkeypatch.setattr(model, "check", lambda rgb, **kw: seen.append(1) or real(rgb, **kw))

    def interrupt():
        if len(seen) == 2:
            raise Interrupted()

    monkeypatch.setattr(host, "check_interrupt", interrupt)
    with pytest.raises(Interrupted):
        check(handle, colours((1, 0, 0), (0, 0, 1), (1, 0, 0), (0, 0, 1)))
    assert len(seen) == 2 and not handle.loaded


def test_keep_loaded_off_releases_after_each_run(red):
    handle = load(keep_loaded=False)
    assert not handle.loaded
    check(handle, colours((1, 0, 0)))
    assert not handle.loaded and handle.loads == 2


def test_fp16_on_a_cpu_records_the_fp32_that_ran(red):
    assert load(precision="fp16").info == {"model": "red", "precision": "fp32", "device": "cpu"}


def test_cuda_on_a_cpu_only_torch_is_a_clear_error(red, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailable, match="pick device cpu"):
        load(precision="fp16", device="cuda")


def test_offline_without_the_model_names_path_and_fix(models_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelMissing) as info:
        load(IMAGE_GUARD.defaults[0].name)
    message = str(info.value)
    assert str(models_dir / "image_guard") in message and "Falconsai/nsfw_image_detection" in message
    assert "--models image_guard" in message and "cutout-guard download image_guard" in message


def test_the_pinned_weights_reject_another_file(hub, models_dir, red_source):
    """The hub serves a file that is not the published one: nothing is installed."""
    from cutout_guard.core.errors import ModelCorrupt

    default = IMAGE_GUARD.defaults[0]
    for remote in default.files:
        data = (red_source / remote.filename).read_bytes()
        hub.add(default.repo_id, remote.filename, data)
    with pytest.raises(ModelCorrupt):
        load(default.name)
    assert not (models_dir / "image_guard" / default.name).exists()


def test_one_loader_feeding_two_check_nodes_keeps_their_reports_apart(red, models_dir, monkeypatch, tmp_path):
    """Run data rides in each node's outputs: two Image Check nodes on one loader, each with its own
    threshold and images, give two Save nodes each their own verdicts and timings."""
    monkeypatch.setenv("CUTOUT_GUARD_OUTPUT_DIR", str(tmp_path / "out"))
    handle = load()
    first_images, second_images = colours((1, 0, 0), (0, 0, 1)), colours((0, 0, 1))
    first = check(handle, first_images)[2]
    second = check(handle, second_images, threshold=0.0)[2]  # threshold 0: everything is unsafe
    saved_first = SaveReport().save([first_images], ["a"], ["keep"], image_report=first)["ui"]["images"]
    saved_second = SaveReport().save([second_images], ["b"], ["keep"], image_report=second)["ui"]["images"]
    data_first = [report.read_png(tmp_path / "out" / s["filename"]) for s in saved_first]
    data_second = report.read_png(tmp_path / "out" / saved_second[0]["filename"])
    assert [d["image"]["safe"] for d in data_first] == [False, True] and [d["image"]["threshold"] for d in data_first] == [0.5, 0.5]
    assert data_second["image"]["safe"] is False and data_second["image"]["threshold"] == 0.0
    assert [d["seconds"]["image_check"] for d in data_first] == [json.loads(r)["seconds"] for r in first]
    assert data_second["seconds"]["image_check"] == json.loads(second[0])["seconds"]
    assert data_second["models"]["image_guard"] == "red" and data_second["devices"]["precision"] == "fp32"
