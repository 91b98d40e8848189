"""The router's result reader: schema-2 and schema-1 report PNGs, and verdicts that only JSON true makes safe."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from cutout_guard.core import report
from cutout_guard.router.result import Result, Timings, report_image

IMAGE = {"model": "nsfw_image_detection", "safe": True, "p_unsafe": 0.1, "threshold": 0.5, "label": "normal", "reason": "ok"}
TEXT = {"model": "guard.gguf", "safe": True, "p_unsafe": 0.02, "threshold": 0.5, "reason": "answer 'safe'", "categories": []}


def output_with(record: dict) -> dict:
    png = report.encode_png(np.zeros((4, 4, 4), np.float32), record)
    return {"images": [{"filename": "r.png", "type": "base64", "data": base64.b64encode(png).decode()}]}


def result_of(record: dict) -> Result:
    found = report_image(output_with(record), endpoint="cpu", job_id="j")
    return Result(png=found.png, report=found.report, endpoint="cpu", endpoint_id="e", reason="test", route=(),
                  job_id="j", filename=found.filename, timings=Timings(wall_s=1.0))


def test_schema_2_carries_both_checks():
    got = result_of(report.make_report(caption="a cat", image=IMAGE, text={**TEXT, "safe": False, "categories": [{"code": "S1", "name": "Violent Crimes"}]},
                                       unsafe_action="blur"))
    assert got.verdict == "unsafe" and got.image_check["safe"] is True and got.text_check["safe"] is False
    assert [c.code for c in got.categories] == ["S1"] and got.p_unsafe == pytest.approx(0.02)
    summary = got.summary()
    assert summary["image"]["label"] == "normal" and summary["text"]["model"] == "guard.gguf"


def test_schema_1_reports_are_still_read():
    record = {"schema": 1, "caption": "a cat", "task": "<CAPTION>", "safe": False, "p_unsafe": 0.9,
              "categories": [{"code": "S10", "name": "Hate"}], "threshold": 0.5, "unsafe_action": "blur",
              "models": {"ben2": None, "florence2": "f", "llama_guard": "g"}, "devices": {}, "seconds": {}}
    got = result_of(record)
    assert got.verdict == "unsafe" and got.image_check is None and got.p_unsafe == pytest.approx(0.9)
    assert [c.name for c in got.categories] == ["Hate"] and got.report["schema"] == 2
    assert result_of({**record, "safe": True, "categories": []}).verdict == "safe"
    assert result_of({**record, "safe": None}).verdict is None  # nothing was checked


@pytest.mark.parametrize("tamper", [
    {"safe": "true"},  # a string
    {"safe": 1},  # a number
    {"text": {**TEXT, "safe": "true"}},  # a check that says so in a string
    {"image": None, "text": None},  # says safe, shows no check
])
def test_only_json_true_backed_by_every_check_is_safe(tamper):
    """Regression: the reader took the report's 'safe' field as it came (a string "false" is truthy)."""
    record = report.make_report(caption="a cat", image=IMAGE, text=TEXT, unsafe_action="blur")
    assert result_of(record).verdict == "safe"
    assert result_of({**record, **tamper}).verdict == "unsafe"


def test_schema_1_string_verdict_is_unsafe():
    record = {"schema": 1, "caption": "x", "safe": "true", "p_unsafe": 0.0, "categories": [], "models": {}}
    assert result_of(record).verdict == "unsafe"
