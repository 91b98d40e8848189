"""The image guard engine on tiny ViT classifiers built here: a rigged one whose answer is known
(unsafe iff most of the image is red), a random one checked against transformers' own processor
and forward pass, device and precision rules, and the folders it refuses."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")

from devtools.synthetic.image_guard import RED_GAIN, build_image_guard  # noqa: E402

from cutout_guard.core.errors import BadInput, DeviceUnavailable, ModelCorrupt  # noqa: E402
from cutout_guard.engines.image_guard import ImageGuard  # noqa: E402

P_RED = 1.0 / (1.0 + math.exp(-2.0 * math.sqrt(2.0) * RED_GAIN))  # the rigged model's answer, worked out by hand


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_guard")
    return {"red": build_image_guard(root / "red", weights="red"), "tiny": build_image_guard(root / "tiny", seed=3)}


@pytest.fixture(scope="module")
def red(folders):
    guard = ImageGuard.load(folders["red"])
    yield guard
    guard.close()


def solid(colour, height=48, width=40):
    return np.ones((height, width, 3), np.float32) * np.asarray(colour, np.float32)


def test_rigged_model_calls_red_unsafe_and_blue_safe(red):
    for colour in ((1, 0, 0), (0.9, 0.3, 0.1)):
        verdict = red.check(solid(colour))
        assert not verdict.safe and verdict.label == "nsfw" and verdict.p_unsafe == pytest.approx(P_RED, rel=1e-6)
        assert "threshold 0.5" in verdict.reason and verdict.model == "red" and verdict.threshold == 0.5
    for colour in ((0, 0, 1), (1, 1, 1), (0.2, 0.8, 0.2)):
        verdict = red.check(solid(colour))
        assert verdict.safe and verdict.label == "normal" and verdict.p_unsafe == pytest.approx(1 - P_RED, rel=1e-4)


def test_rigged_model_counts_the_red_part_of_the_image(red):
    """Mostly red (5 of 8 columns of patches at the model's 32² input) is unsafe; mostly blue is safe."""
    image = solid((0, 0, 1), 64, 64)
    image[:, :40] = (1, 0, 0)
    assert not red.check(image).safe
    image = solid((0, 0, 1), 64, 64)
    image[:, :24] = (1, 0, 0)
    assert red.check(image).safe


def test_threshold_is_the_unsafe_probability_that_counts(red):
    blue = solid((0, 0, 1))
    assert red.check(blue, threshold=0.0).safe is False  # p_unsafe >= 0 always
    assert red.check(solid((1, 0, 0)), threshold=1.0).safe is True  # p_unsafe < 1
    with pytest.raises(BadInput, match="between 0 and 1"):
        red.check(blue, threshold=1.5)


def test_preprocessing_matches_transformers_vit_processor(folders):
    """The pack's numpy pre-processing against transformers' (PIL) ViT image processor."""
    from PIL import Image
    from transformers import ViTImageProcessorPil

    guard = ImageGuard.load(folders["tiny"])
    rgb = np.random.default_rng(0).random((37, 53, 3)).astype(np.float32)
    ours = guard.preprocess(rgb)
    config = json.loads((folders["tiny"] / "preprocessor_config.json").read_text())
    config.pop("image_processor_type")
    reference = ViTImageProcessorPil(**config)
    pixels = Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")
    expected = reference(images=pixels, return_tensors="np")["pixel_values"][0]
    assert ours.shape == expected.shape == (3, 32, 32)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_random_model_gives_transformers_own_probability(folders):
    """p_unsafe is the softmax of the model's logits for the nsfw label, computed here through transformers alone."""
    import torch
    from PIL import Image
    from transformers import ViTForImageClassification, ViTImageProcessorPil

    guard = ImageGuard.load(folders["tiny"])
    model = ViTForImageClassification.from_pretrained(folders["tiny"]).eval()
    config = json.loads((folders["tiny"] / "preprocessor_config.json").read_text())
    config.pop("image_processor_type")
    processor = ViTImageProcessorPil(**config)
    rng = np.random.default_rng(1)
    images = [rng.random((24 + 7 * i, 30, 3)).astype(np.float32) for i in range(4)]
    for rgb in images:
        pixels = Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")
        with torch.no_grad():
            logits = model(**processor(images=pixels, return_tensors="pt")).logits[0].double()
        expected = float(torch.softmax(logits, -1)[model.config.label2id["nsfw"]])
        verdict = guard.check(rgb)
        assert verdict.p_unsafe == pytest.approx(expected, abs=1e-5)
        assert verdict.safe == (expected < 0.5)


def test_fp16_on_the_cpu_runs_as_fp32_and_says_so(folders, caplog):
    with caplog.at_level(logging.WARNING):
        guard = ImageGuard.load(folders["tiny"], precision="fp16", device="cpu")
    assert guard.running_precision == "fp32" and "fp16 requested; the CPU has no fp16 kernels for it (e.g. LayerNorm), running fp32" in caplog.text
    reference = ImageGuard.load(folders["tiny"], precision="fp32")
    rgb = solid((0.3, 0.5, 0.7))
    assert guard.check(rgb).p_unsafe == reference.check(rgb).p_unsafe


def test_cuda_without_a_cuda_torch_is_a_clear_error(folders, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailable, match="pick device cpu"):
        ImageGuard.load(folders["tiny"], precision="fp16", device="cuda")


def test_unknown_precision_is_refused(folders):
    with pytest.raises(BadInput, match="precision"):
        ImageGuard.load(folders["tiny"], precision="int8")


def test_folders_it_refuses(folders, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(folders["tiny"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ModelCorrupt, match="pickle files are never loaded"):
        ImageGuard.load(pickled)

    remote = tmp_path / "remote"
    shutil.copytree(folders["tiny"], remote)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ModelCorrupt, match="never runs code shipped with a model"):
        ImageGuard.load(remote)

    relabelled = tmp_path / "relabelled"
    shutil.copytree(folders["tiny"], relabelled)
    (relabelled / "config.json").write_text(json.dumps({**config, "id2label": {"0": "cat", "1": "dog"}}))
    with pytest.raises(ModelCorrupt, match="'nsfw'"):
        ImageGuard.load(relabelled)

    truncated = tmp_path / "truncated"
    shutil.copytree(folders["tiny"], truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelCorrupt, match="truncated"):
        ImageGuard.load(truncated)


def test_bad_image_shape_is_a_clear_error(red):
    with pytest.raises(BadInput, match="H×W×3"):
        red.check(np.zeros((8, 8), np.float32))


def test_close_releases_the_model(folders):
    guard = ImageGuard.load(folders["tiny"])
    guard.close()
    assert guard.model is None
    with pytest.raises(RuntimeError, match="closed"):
        guard.check(solid((1, 1, 1)))
