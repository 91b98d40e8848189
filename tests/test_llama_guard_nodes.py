"""Llama Guard node adapters called directly: lists in and out, reports, loading, downloads."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

pytest.importorskip("llama_cpp")

from llama_guard_models import model  # noqa: E402

from cutout_guard.comfyui import llama_guard_nodes as nodes  # noqa: E402
from cutout_guard.core.errors import BadInput, MissingDependency, ModelCorrupt, ModelMissing  # noqa: E402
from cutout_guard.core.models import LLAMA_GUARD, get_kind  # noqa: E402

KITTEN = "A photo of a kitten on a sofa."
GRENADE = "A photo of a grenade on a sofa."


@pytest.fixture
def trigger_file(models_dir):
    target = models_dir / "LLM" / "trigger.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model("trigger"), target)
    return target


def load(name="trigger.gguf", n_gpu_layers=0, n_ctx=2048, threads=1, keep_loaded=True):
    return nodes.LoadLlamaGuard().load(name, n_gpu_layers, n_ctx, threads, keep_loaded)[0]


def check(handle, texts, policy=("all",), threshold=(0.5,), **old):
    result = nodes.SafetyCheck().run([handle], list(texts), list(policy) if policy else None, list(threshold) if threshold else None, **old)
    assert result["ui"]["text"] == result["result"][3]  # the reports are shown as they are returned
    return result["result"]


def test_kind_uses_the_shared_llm_folder():
    kind = get_kind("llama_guard")
    assert kind is LLAMA_GUARD and kind.folder_key == "LLM" and kind.extensions == (".gguf",)
    default = kind.defaults[0]
    assert default.name == "Llama-Guard-3-8B.Q4_K_M.gguf" and default.repo_id == "QuantFactory/Llama-Guard-3-8B-GGUF"
    assert default.files[0].sha256 == "c5ea8760a1e544eea66a8915fcc3fbd2c67357ea2ee6871a9e6a6c33b64d4981"


def test_dropdown_lists_defaults_and_found_models(trigger_file):
    choices = nodes.LoadLlamaGuard.INPUT_TYPES()["required"]["model"][0]
    assert choices[:2] == ["Llama-Guard-3-8B.Q4_K_M.gguf", "Llama-Guard-3-1B.Q4_K_M.gguf"]
    assert "trigger.gguf" in choices


def test_n_texts_give_n_verdicts_matched_by_index(trigger_file):
    handle = load()
    texts = [KITTEN, GRENADE, "A dog.", "A grenade in a box.", KITTEN]
    safe, categories, p_unsafe, reports = check(handle, texts)
    assert safe == [True, False, True, False, True]
    assert categories == ["", "S1: Violent Crimes", "", "S1: Violent Crimes", ""]
    assert len(p_unsafe) == 5 and p_unsafe[0] < 0.05 < 0.99 < p_unsafe[1]
    parsed = [json.loads(r) for r in reports]
    assert [r["index"] for r in parsed] == list(range(5)) and [r["text"] for r in parsed] == texts
    assert parsed[1]["categories"] == [{"code": "S1", "name": "Violent Crimes"}]
    assert parsed[1]["safe"] is False and parsed[1]["p_unsafe"] == p_unsafe[1] and parsed[1]["threshold"] == 0.5
    assert parsed[0]["model"] == "trigger.gguf" and parsed[0]["n_gpu_layers"] == 0
    assert handle.loads == 1


def test_per_text_policy_and_threshold_or_one_for_all(trigger_file):
    handle = load()
    safe, categories, _, _ = check(handle, [GRENADE, GRENADE], policy=["S1", "S2-S14"])
    assert safe == [False, True] and categories == ["S1: Violent Crimes", ""]
    with pytest.raises(BadInput, match="policy"):
        check(handle, [KITTEN, KITTEN, KITTEN], policy=["all", "all"])
    with pytest.raises(BadInput):
        check(handle, [KITTEN], policy=["violence"])


def test_old_categories_input_still_takes_effect(trigger_file, caplog):
    """'policy' was called 'categories'; an API prompt saved then still sets it (a hidden input)."""
    handle = load()
    assert "categories" in nodes.SafetyCheck.INPUT_TYPES()["hidden"]
    safe, _, _, _ = check(handle, [GRENADE], policy=None, categories=["S2-S14"])
    assert safe == [True]  # S1 does not count under the old input's policy
    assert "now called 'policy'" in caplog.text
    safe, _, _, _ = check(handle, [GRENADE], policy=None, threshold=None)
    assert safe == [False]  # neither given: every category counts, threshold 0.5


def test_keep_loaded_off_closes_the_model_after_each_run(trigger_file):
    handle = load(keep_loaded=False)
    assert not handle.loaded  # loaded once to report errors, then released
    check(handle, [KITTEN])
    assert not handle.loaded and handle.loads == 2


def test_release_calls_close(trigger_file):
    handle = load()
    guard = handle.get()
    handle.release()
    assert guard._llm is None and not handle.loaded


def test_missing_llama_cpp_is_reported_before_any_download(hub, models_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingDependency, match="pip install llama-cpp-python"):
        load(LLAMA_GUARD.defaults[0].name)
    assert hub.state.requests == []


def test_default_downloads_from_the_hub_into_the_llm_folder(hub, models_dir):
    default = LLAMA_GUARD.defaults[1]  # the 1B file has no pinned hash, so a synthetic file can stand in
    data = model("trigger").read_bytes()
    hub.add(default.repo_id, default.files[0].filename, data)
    handle = load(default.name)
    target = models_dir / "LLM" / default.name
    assert target.is_file() and target.stat().st_size == len(data)
    assert (models_dir / "LLM" / (default.name + ".lock.json")).is_file()
    assert check(handle, [GRENADE])[0] == [False]


def test_the_8b_pin_rejects_another_file(hub, models_dir):
    default = LLAMA_GUARD.defaults[0]
    hub.add(default.repo_id, default.files[0].filename, model("trigger").read_bytes())
    with pytest.raises(ModelCorrupt):
        load(default.name)
    assert not (models_dir / "LLM" / default.name).exists()


def test_offline_without_the_file_names_path_and_fix(models_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelMissing) as info:
        load(LLAMA_GUARD.defaults[0].name)
    message = str(info.value)
    assert str(models_dir / "LLM") in message and "QuantFactory/Llama-Guard-3-8B-GGUF" in message
    assert "--models llama_guard" in message


def test_run_records_model_device_and_seconds_for_the_report(trigger_file):
    handle = load(n_gpu_layers=0)
    *_, reports = check(handle, [KITTEN, GRENADE])
    assert handle.info == {"model": "trigger.gguf", "n_gpu_layers": 0}
    assert not hasattr(handle, "last_run")  # run data travels in the node's outputs only
    for index, text in enumerate(reports):
        data = json.loads(text)
        assert data["model"] == "trigger.gguf" and data["n_gpu_layers"] == 0 and data["seconds"] > 0
        assert data["index"] == index and data["stage"] == "safety_check"


def test_blank_caption_is_unsafe_with_a_reason(trigger_file):
    """Regression: an empty caption was judged safe and the image published unblurred."""
    safe, categories, p_unsafe, reports = check(load(), [KITTEN, "", "   "])
    assert safe == [True, False, False] and p_unsafe[1:] == [1.0, 1.0]
    for text in reports[1:]:
        data = json.loads(text)
        assert data["safe"] is False and data["p_unsafe"] is None and "empty" in data["reason"]
