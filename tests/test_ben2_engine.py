"""BEN2 engine: pre/post-processing against numpy references, float16 output, flat maps, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference
from cutout_guard.engines.ben2 import Ben2, postprocess, preprocess
from cutout_guard.core.errors import DeviceUnavailable, ModelCorrupt
from devtools.synthetic.ben2 import build_ben2, expected_probability

SIZE = 64  # the tiny models take 64² inputs; the engine reads the size from the model


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("ben2")
    return {
        "float32": build_ben2(root / "f32.onnx", size=SIZE),
        "float16": build_ben2(root / "f16.onnx", size=SIZE, output_dtype="float16"),
        "flat": build_ben2(root / "flat.onnx", size=SIZE, flat=True),
    }


def photo(height, width, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), 0.5 + 0.0 * xx], axis=-1)
    return np.clip(base + 0.1 * rng.standard_normal((height, width, 3)), 0, 1).astype(np.float32)


def expected_alpha(rgb, normalize=True):
    """The whole pipeline in plain numpy: resize, the model's formula, min-max, resize back."""
    h, w = rgb.shape[:2]
    tensor = np.stack([reference.resize(rgb[..., c], SIZE, SIZE) for c in range(3)])[None]
    prob = expected_probability(tensor)[0, 0]
    if normalize:
        prob = (prob - prob.min()) / (prob.max() - prob.min())
    return np.clip(reference.resize(prob, w, h), 0, 1)


@pytest.mark.parametrize("shape", [(40, 100), (200, 130), (1, 1), (64, 64)])
def test_matte_matches_numpy_reference(model_paths, shape):
    rgb = photo(*shape)
    model = Ben2.load(model_paths["float32"])
    alpha = model.matte(rgb)
    assert alpha.shape == shape and alpha.dtype == np.float32
    if shape == (1, 1):  # one pixel: the resized map is flat, so normalisation keeps it as is
        assert np.isfinite(alpha).all() and 0 <= alpha[0, 0] <= 1
        return
    np.testing.assert_allclose(alpha, expected_alpha(rgb), atol=2e-4)


def test_raw_map_is_the_probability(model_paths):
    rgb = photo(50, 70, seed=3)
    alpha = Ben2.load(model_paths["float32"]).matte(rgb, mask_values="raw")
    np.testing.assert_allclose(alpha, expected_alpha(rgb, normalize=False), atol=2e-4)


def test_unknown_mask_values_is_refused_before_running(model_paths):
    from cutout_guard.core.errors import BadInput

    model = Ben2.load(model_paths["float32"])
    model.infer = None  # the model must not run
    with pytest.raises(BadInput, match="mask_values must be one of normalized, raw"):
        model.matte(photo(8, 8), mask_values="stretched")


def test_float16_output_is_cast_to_float32(model_paths):
    rgb = photo(80, 60, seed=1)
    model = Ben2.load(model_paths["float16"])
    raw = model.infer(preprocess(rgb, SIZE))
    assert raw.dtype == np.float32
    np.testing.assert_allclose(model.matte(rgb), expected_alpha(rgb), atol=3e-3)


def test_flat_map_gives_defined_mask_not_nan(model_paths):
    alpha = Ben2.load(model_paths["flat"]).matte(photo(30, 40))
    assert np.isfinite(alpha).all()
    np.testing.assert_allclose(alpha, 0.5, atol=1e-3)


def test_postprocess_flat_map_directly():
    alpha = postprocess(np.full((1, 1, 8, 8), 0.25, np.float32), 5, 3)
    assert alpha.shape == (3, 5)
    np.testing.assert_allclose(alpha, 0.25, atol=1e-6)


def test_preprocess_layout_and_range():
    rgb = photo(10, 20)
    tensor = preprocess(rgb, 16)
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, 1], reference.resize(rgb[..., 1], 16, 16), atol=1e-5)


def test_input_name_is_read_from_the_model(tmp_path):
    path = build_ben2(tmp_path / "named.onnx", size=SIZE, input_name="pixel_values")
    model = Ben2.load(path)
    assert model.input_name == "pixel_values"
    assert model.matte(photo(20, 20)).shape == (20, 20)


def test_cuda_on_cpu_only_install_names_the_fix(model_paths):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(DeviceUnavailable) as info:
        Ben2.load(model_paths["float32"], provider="CUDA")
    message = str(info.value)
    assert "onnxruntime-gpu" in message and "CPU workflow" in message


def test_cuda_silent_fallback_is_an_error(model_paths, monkeypatch):
    """A session created for CUDA that runs on the CPU (missing CUDA libraries) must not pass."""
    import onnxruntime

    real_session = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(
        onnxruntime, "InferenceSession",
        lambda path, sess_options=None, providers=None: real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"]),
    )
    preloaded = []
    monkeypatch.setattr(onnxruntime, "preload_dlls", lambda: preloaded.append(True), raising=False)
    with pytest.raises(DeviceUnavailable, match="fell back to the CPU"):
        Ben2.load(model_paths["float32"], provider="CUDA")
    assert preloaded == [True]  # pip-installed CUDA libraries were offered before the session was made


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_model_file_is_a_clear_error(model_paths, tmp_path, damage):
    data = model_paths["float32"].read_bytes()
    bad = tmp_path / "BEN2_bad.onnx"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a model" * 100, "empty": b""}[damage])
    with pytest.raises(ModelCorrupt) as info:
        Ben2.load(bad)
    assert str(bad) in str(info.value) and "download it again" in str(info.value)


def test_a_model_without_bens_signature_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    path = tmp_path / "other.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    with pytest.raises(ModelCorrupt, match="does not look like a BEN2 model"):
        Ben2.load(path)


def test_omp_num_threads_zero_does_not_break_the_session(model_paths):
    """The CPU image sets OMP_NUM_THREADS=0; the session must still run with the CPU quota."""
    code = (
        "import numpy as np, sys\n"
        "from cutout_guard.engines.ben2 import Ben2\n"
        "from cutout_guard.core.cpu import cpu_quota\n"
        f"m = Ben2.load({str(model_paths['float32'])!r})\n"
        "a = m.matte(np.full((20, 30, 3), 0.5, np.float32))\n"
        "print(a.shape, cpu_quota())\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="0", MKL_NUM_THREADS="0")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["(20,", "30)"]


def test_sessions_use_the_measured_memory_settings(model_paths):
    """Arena and memory pattern off: the lowest peak RSS measured for a BEN2-cost graph."""
    model = Ben2.load(model_paths["float32"])
    options = model.session.get_session_options()
    assert options.enable_cpu_mem_arena is False and options.enable_mem_pattern is False


def test_the_cpu_session_uses_basic_graph_optimisation_and_it_can_be_chosen(model_paths):
    """On the CPU ``basic`` by default (1 GiB less peak than ``all`` on BEN2's real architecture,
    same output); any level on request, and the mask does not depend on it."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    default = Ben2.load(model_paths["float32"])
    assert default.session.get_session_options().graph_optimization_level == levels["basic"]
    chosen = Ben2.load(model_paths["float32"], optimization="all")
    assert chosen.session.get_session_options().graph_optimization_level == levels["all"]
    rgb = np.random.default_rng(5).random((40, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(default.matte(rgb), chosen.matte(rgb), atol=1e-5)
    with pytest.raises(ValueError, match="basic, extended, all"):
        Ben2.load(model_paths["float32"], optimization="fastest")
