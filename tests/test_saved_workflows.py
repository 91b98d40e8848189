"""Workflows saved before inputs were renamed keep working (tests/data/saved_workflows: the CPU
workflows as the pack shipped them before, UI and API format, kept as they were).

ComfyUI hands saved values to a node by input name (API prompts) and by position (the UI's
``widgets_values``), so a renamed input must keep its position and its old name must still be read.
Here: every input of an old API file is in today's file under the same name with the same value,
or under its new name (RENAMED) with the same value; the old names are still read by the nodes
(hidden inputs); and in a real ComfyUI the old files load in the frontend and run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_harness import TINY, with_tiny_models
from cutout_guard import NODE_CLASS_MAPPINGS

REPO = Path(__file__).resolve().parent.parent
SAVED = REPO / "tests" / "data" / "saved_workflows"
NAMES = ("cutout_caption_safety", "cutout", "caption_safety")
# (node id, old input name) -> new input name: every rename of a node input, ever
RENAMED = {
    ("CutoutGuardCaption", "background"): "color",
    ("CutoutGuardSafetyCheck", "categories"): "policy",
}


def saved(name: str, ui: bool = False) -> dict:
    return json.loads((SAVED / f"{name}{'' if ui else '.api'}.json").read_text())


def current(name: str) -> dict:
    return json.loads((REPO / "workflows_cpu" / f"{name}.api.json").read_text())


# (node id, input) deprecated: still accepted (old files run), no longer wired in today's files
DEPRECATED = {
    ("CutoutGuardSaveReport", "ben2"): "cutout_report",  # run data rides in each apply node's report
    ("CutoutGuardSaveReport", "florence2"): "caption_report",
    ("CutoutGuardSaveReport", "llama_guard"): "safety_report",
}


@pytest.mark.parametrize("name", NAMES)
def test_every_old_api_input_is_in_todays_file_input_for_input(name):
    """Old nodes keep their ids (nodes added since come after them) and their inputs, but for the
    deprecated ones, whose replacement is wired instead."""
    old, new = saved(name), current(name)
    assert {k: v["class_type"] for k, v in old.items()} == {k: new[k]["class_type"] for k in old}
    for node_id, node in old.items():
        for input_name, value in node["inputs"].items():
            replacement = DEPRECATED.get((node["class_type"], input_name))
            if replacement is not None:
                assert replacement in new[node_id]["inputs"] and input_name not in new[node_id]["inputs"], (name, input_name)
                assert input_name in NODE_CLASS_MAPPINGS[node["class_type"]].INPUT_TYPES()["optional"]  # still accepted
                continue
            renamed = RENAMED.get((node["class_type"], input_name), input_name)
            assert new[node_id]["inputs"].get(renamed) == value, f"{name} node {node_id}: {input_name} -> {renamed}"


def test_each_renamed_input_is_still_read_under_its_old_name():
    for (node, old), new in RENAMED.items():
        spec = NODE_CLASS_MAPPINGS[node].INPUT_TYPES()
        assert old in spec.get("hidden", {}), f"{node}: the old input '{old}' is no longer accepted"
        assert new in spec.get("optional", {}), f"{node}: '{new}' must be optional, or old API prompts fail validation"


def test_old_ui_widget_values_fit_todays_widgets_by_position():
    """The UI restores widget values by position: read an old node's values against today's widget
    order and they must give today's API inputs (renamed inputs kept their place; new ones come last)."""
    from cutout_guard.workflows.render import _inputs, is_widget, node_definitions

    defs = node_definitions()
    for name in NAMES:
        today = current(name)
        for node in saved(name, ui=True)["nodes"]:
            if node["type"] not in NODE_CLASS_MAPPINGS:
                continue
            widgets = [n for n, kind, options, _ in _inputs(defs[node["type"]]) if is_widget(kind, options)]
            linked = {entry["name"] for entry in node["inputs"] if entry.get("link") is not None}
            restored = {n: v for n, v in zip(widgets, node["widgets_values"]) if n not in linked}
            inputs = today[str(node["id"])]["inputs"]
            assert restored == {n: inputs[n] for n in restored}, f"{name}: {node['type']} widgets moved"
            assert len(widgets) >= len(node["widgets_values"]), f"{name}: {node['type']} lost a widget"


# ----------------------------------------------------------------------------- a real ComfyUI

def _check_report(comfyui, prompt: dict, entry: dict) -> dict:
    from cutout_guard.core import report

    save_id = next(k for k, v in prompt.items() if v["class_type"] == "CutoutGuardSaveReport")
    saved_image = entry["outputs"][save_id]["images"][0]
    return report.read_png(comfyui.view(saved_image["filename"], saved_image["subfolder"]))


@pytest.mark.comfyui
@pytest.mark.parametrize("name", NAMES)
def test_old_api_workflow_runs_in_comfyui(comfyui, tiny_models, uploaded, name):
    prompt = with_tiny_models(saved(name), uploaded)
    entry = comfyui.run(prompt, timeout=600)
    data = _check_report(comfyui, prompt, entry)
    if name != "cutout":
        assert isinstance(data["caption"], str) and isinstance(data["safe"], bool)
        log = comfyui.log()
        # the old names reached the nodes through ComfyUI's executor (hidden inputs) and said so
        assert "the input 'background' is now called 'color'" in log
        assert "the input 'categories' is now called 'policy'" in log


@pytest.mark.comfyui
def test_old_categories_input_takes_effect_in_comfyui(comfyui, tiny_models):
    """A saved API prompt's 'categories' still sets the policy: S1 does not count under S2-S14."""
    verdicts = {}
    for policy in ("all", "S2-S14"):
        prompt = {
            "1": {"class_type": "PrimitiveString", "inputs": {"value": "A photo of a grenade on a sofa."}},
            "2": {"class_type": "CutoutGuardLoadLlamaGuard", "inputs": {
                "model": TINY["CutoutGuardLoadLlamaGuard"], "n_gpu_layers": 0, "n_ctx": 2048, "threads": 0, "keep_loaded": True}},
            "3": {"class_type": "CutoutGuardSafetyCheck", "inputs": {
                "llama_guard": ["2", 0], "text": ["1", 0], "categories": policy, "threshold": 0.5}},
        }
        entry = comfyui.run(prompt)
        verdicts[policy] = json.loads(entry["outputs"]["3"]["text"][0])
    assert verdicts["all"]["safe"] is False and verdicts["all"]["categories"] == [{"code": "S1", "name": "Violent Crimes"}]
    assert verdicts["S2-S14"]["safe"] is True and "S1" not in verdicts["S2-S14"]["policy"]


@pytest.mark.comfyui
def test_old_ui_workflows_load_in_the_frontend_and_run(comfyui, tiny_models, uploaded):
    """The frontend restores an old UI workflow's widget values by position under today's names:
    its prompt is today's API file for the nodes it has (bar the deprecated Save links), and it runs."""
    from frontend import api_inputs, browser_page, load_and_convert

    with browser_page(comfyui) as (page, errors):
        for name in NAMES:
            converted = load_and_convert(page, saved(name, ui=True))
            assert not converted["missing"], f"{name}: nodes the frontend could not create: {converted['missing']}"
            today = api_inputs(current(name))  # today's file has nodes added since (after the old ones)
            for node_id, node in converted["prompt"].items():
                assert node["class_type"] == today[node_id]["class_type"], f"{name} node {node_id}"
                for key, value in node["inputs"].items():
                    if (node["class_type"], key) in DEPRECATED:
                        continue  # the old loader link: still accepted, replaced by a report today
                    assert today[node_id]["inputs"].get(key) == value, f"the old {name}.json gives {node_id}.{key} = {value!r}"
            prompt = with_tiny_models(converted["prompt"], uploaded)
            _check_report(comfyui, prompt, comfyui.run(prompt, timeout=600))
    assert not [e for e in errors if "cutout" in e.lower()], errors
