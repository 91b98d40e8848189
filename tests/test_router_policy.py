"""The router's pure parts: policy evaluation, the request body, reading a worker's answer."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cutout_guard.router
from cutout_guard.core.errors import BadInput
from cutout_guard.core.report import encode_png, make_report
from cutout_guard.router import (
    MalformedOutput, PolicyError, Request, Router, load_policy, parse_policy, route,
)
from cutout_guard.router.client import worker_errors
from cutout_guard.router.policy import (
    BUILTIN_DIR, fallback_for, first_match, is_off_peak, overflow, parse_time, queues_needed,
)
from cutout_guard.router.result import report_image
from cutout_guard.router.workflow import load_workflow, payload, upload_name, with_image

REPO = Path(__file__).resolve().parent.parent
WED = datetime(2026, 11, 25, tzinfo=timezone.utc)  # a Wednesday


def at(hour: int, minute: int = 0, day: datetime = WED) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


def policy_with(body: str, tmp_path: Path | None = None):
    return parse_policy(body, base_dir=tmp_path or REPO, source="test.toml")


# ----------------------------------------------------------------------------- the default policy


def test_default_policy_is_the_documented_one():
    policy = load_policy()
    assert [(r.name, r.use) for r in policy.rules] == [
        ("batch", "cpu"), ("urgent", "gpu"), ("paid", "gpu"), ("off-peak", "cpu"), ("free", "cpu")]
    assert policy.rules[0].kind == "batch" and policy.rules[0].max_queue == 20
    assert policy.default == "cpu" and policy.wait == "run"
    assert policy.base_url == "https://api.runpod.ai/v2" and policy.api_key_env == "RUNPOD_API_KEY"
    assert policy.endpoints["gpu"].max_queue == 10 and policy.endpoints["cpu"].max_queue is None
    assert policy.endpoints["cpu"].workflow == BUILTIN_DIR / "workflows_cpu" / "cutout_caption_safety.api.json"
    assert policy.endpoints["gpu"].workflow == BUILTIN_DIR / "workflows_gpu" / "cutout_caption_safety.api.json"
    assert dict(policy.fallback) == {"gpu": "cpu"}
    assert policy.tiers == {"free", "paid"}


def test_readme_policy_example_parses(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert "## Routing between CPU and GPU endpoints" in readme, "the README lost its routing section"
    section = readme.split("## Routing between CPU and GPU endpoints", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(example, base_dir=REPO, source="README")
    assert policy.tiers == {"free", "paid", "team"}
    assert policy.endpoints["gpu"].price_per_second == pytest.approx(0.00031)
    assert first_match(policy, Request("team"), at(23)).rule == "night"
    assert first_match(policy, Request("paid"), at(23)).rule == "paying"
    assert first_match(policy, Request("free"), at(12)).rule is None       # the default endpoint


@pytest.mark.parametrize(
    ("tier", "urgent", "when", "endpoint", "rule"),
    [
        ("free", True, at(12), "gpu", "urgent"),     # urgent beats the free tier
        ("paid", True, at(23), "gpu", "urgent"),
        ("paid", False, at(12), "gpu", "paid"),
        ("paid", False, at(23), "gpu", "paid"),      # paid comes before off-peak
        ("free", False, at(22), "cpu", "off-peak"),  # window start is inside
        ("free", False, at(6, 59), "cpu", "off-peak"),
        ("free", False, at(7), "cpu", "free"),       # window end is outside
        ("free", False, at(12), "cpu", "free"),
    ],
)
def test_default_rules(tier, urgent, when, endpoint, rule):
    decision = first_match(load_policy(), Request(tier, urgent), when)
    assert (decision.endpoint, decision.rule) == (endpoint, rule)
    assert decision.steps == (decision.reason,) and f"'{rule}'" in decision.reason


def test_no_matching_rule_takes_the_default():
    policy = policy_with('default = "gpu"\n[[rules]]\nwhen = { tier = "free" }\nuse = "cpu"\n')
    decision = first_match(policy, Request("free"), at(12))
    assert decision.rule == "rule 1" and decision.endpoint == "cpu"
    policy = policy_with('default = "gpu"\n[[rules]]\nwhen = { urgent = true }\nuse = "cpu"\n')
    decision = first_match(policy, Request("anything"), at(12))  # no rule names a tier: any tier is fine
    assert decision.endpoint == "gpu" and decision.rule is None and "default gpu" in decision.reason


def test_conditions_of_a_rule_all_have_to_hold():
    policy = policy_with("""
tiers = ["free"]
[[rules]]
name = "paid at night"
when = { tier = ["paid", "team"], off_peak = true, urgent = false }
use = "cpu"
[[rules]]
name = "rest"
use = "gpu"
""")
    assert first_match(policy, Request("team"), at(23)).rule == "paid at night"
    assert first_match(policy, Request("team", urgent=True), at(23)).rule == "rest"
    assert first_match(policy, Request("paid"), at(12)).rule == "rest"
    assert first_match(policy, Request("free"), at(23)).rule == "rest"
    assert "tier 'paid' or 'team' and off-peak" in first_match(policy, Request("team"), at(23)).reason


def test_unknown_tier_is_refused():
    with pytest.raises(PolicyError, match=r"unknown tier 'Paid'.*'free', 'paid'"):
        first_match(load_policy(), Request("Paid"), at(12))


# ----------------------------------------------------------------------------- off-peak windows


def test_windows_days_and_time_zones():
    policy = policy_with("""
[off_peak]
timezone = "Europe/Berlin"
windows = [{ start = "20:00", end = "06:00", days = ["thu"] }, { days = ["Saturday", "sun"] }, "12:00-13:00"]
""")
    thu, fri, sat = (WED + timedelta(days=n) for n in (1, 2, 3))
    # Berlin is UTC+1 in November
    assert is_off_peak(policy, at(19, 0, thu))           # Thursday 20:00 in Berlin
    assert not is_off_peak(policy, at(18, 59, thu))      # Thursday 19:59
    assert is_off_peak(policy, at(4, 59, fri))           # Friday 05:59: Thursday's window goes on
    assert not is_off_peak(policy, at(5, 0, fri))        # Friday 06:00
    assert not is_off_peak(policy, at(4, 0, thu))        # Thursday 05:00: Wednesday had no window
    assert is_off_peak(policy, at(9, 0, sat))            # all of Saturday
    assert is_off_peak(policy, at(11, 30))               # Wednesday 12:30, a window of every day
    assert not is_off_peak(policy, at(12, 0))            # Wednesday 13:00
    july = datetime(2026, 7, 1, tzinfo=timezone.utc)     # a Wednesday in summer time, UTC+2
    assert is_off_peak(policy, at(10, 30, july)) and not is_off_peak(policy, at(11, 0, july))


def test_wrapping_window_belongs_to_the_day_it_starts():
    policy = policy_with('[off_peak]\nwindows = [{ start = "22:00", end = "02:00", days = ["mon"] }]\n')
    mon = WED - timedelta(days=2)
    assert is_off_peak(policy, at(23, 0, mon))
    assert is_off_peak(policy, at(1, 59, mon + timedelta(days=1)))   # Tuesday 01:59
    assert not is_off_peak(policy, at(1, 0, mon))                     # Monday 01:00 belongs to Sunday's
    assert not is_off_peak(policy, at(2, 0, mon + timedelta(days=1)))


def test_naive_time_is_utc_and_all_day_window():
    policy = policy_with('[off_peak]\nwindows = ["00:00-24:00"]\n')
    assert is_off_peak(policy, datetime(2026, 1, 1, 23, 59))
    assert not is_off_peak(policy_with('[off_peak]\nwindows = []\n'), at(3))


# ----------------------------------------------------------------------------- the decision time


def test_router_decides_at_the_time_it_is_given():
    r = Router(load_policy(), env={})                    # free requests need no endpoint id (no queue check)
    free = Request("free")
    assert r.decide(free, now=at(12)).rule == "free" and r.decide(free, now=at(23)).rule == "off-peak"
    pinned = Router(load_policy(), env={}, now=at(23))
    decision = pinned.decide(free)
    assert decision.rule == "off-peak" and decision.at == at(23)
    assert pinned.decide(free, now=at(12)).rule == "free"   # a decision's own now comes first
    times = iter([at(12), at(23), at(6, 59), at(7)])
    ticking = Router(load_policy(), env={}, now=lambda: next(times))  # asked once per decision
    assert [ticking.decide(free).rule for _ in range(4)] == ["free", "off-peak", "off-peak", "free"]


def test_decision_time_is_utc_and_a_naive_time_is_utc():
    decision = first_match(load_policy(), Request("free"), datetime(2026, 11, 25, 23, 30))
    assert decision.rule == "off-peak" and decision.at == at(23, 30) and decision.at.tzinfo == timezone.utc
    berlin = datetime.fromisoformat("2026-11-26T00:30+01:00")
    assert first_match(load_policy(), Request("free"), berlin).at == at(23, 30)


@pytest.mark.parametrize(("text", "moment"), [
    ("2026-11-25T23:30", at(23, 30)),
    ("2026-11-25T23:30:00Z", at(23, 30)),
    ("2026-11-25 23:30z", at(23, 30)),
    ("2026-11-26T08:30+09:00", at(23, 30)),
])
def test_parse_time(text, moment):
    parsed = parse_time(text)
    assert parsed == moment and parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["", "tonight", "23:30", "2026-13-01T00:00"])
def test_parse_time_refuses_what_is_not_iso(text):
    with pytest.raises(PolicyError, match="not ISO 8601 — write e.g. 2026-11-25T23:30"):
        parse_time(text)


def test_the_host_time_zone_changes_nothing():
    """``--at`` without an offset is UTC whatever zone the machine is set to."""
    seen = set()
    for zone in ("UTC", "Pacific/Kiritimati", "America/Los_Angeles"):
        done = subprocess.run(
            [sys.executable, "-m", "cutout_guard", "submit", "photo.png", "--tier", "free", "--route-only", "--json",
             "--at", "2026-11-25T23:30"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "TZ": zone})
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        seen.add((printed["at"], printed["route"][0].split(" (")[0]))
    assert seen == {("2026-11-25T23:30:00+00:00", "rule 'off-peak'")}


# ----------------------------------------------------------------------------- overflow


def test_overflow_matrix():
    policy = load_policy()  # gpu limit 10, cpu none
    paid = first_match(policy, Request("paid"), at(12))
    assert queues_needed(policy, paid) == ("gpu",)
    assert overflow(policy, paid, {"gpu": 10}).endpoint == "gpu"       # at the limit: stays
    moved = overflow(policy, paid, {"gpu": 11})
    assert moved.endpoint == "cpu" and moved.rule == "paid"
    assert moved.steps[0] == paid.reason and moved.reason == moved.steps[1]
    assert overflow(policy, paid, {"gpu": None}).endpoint == "gpu"     # unknown: stays
    free = first_match(policy, Request("free"), at(12))
    assert queues_needed(policy, free) == ()
    assert overflow(policy, free, {"cpu": 10_000}).endpoint == "cpu"   # no cpu limit: never moves

    both = policy_with("[endpoints.cpu]\nmax_queue = 4\n[endpoints.gpu]\nmax_queue = 2\n")
    paid = first_match(both, Request("paid"), at(12))
    assert queues_needed(both, paid) == ("gpu", "cpu")
    assert overflow(both, paid, {"gpu": 3, "cpu": 4}).endpoint == "cpu"
    assert overflow(both, paid, {"gpu": 3, "cpu": 5}).endpoint == "gpu"      # other over its limit too
    assert overflow(both, paid, {"gpu": 3, "cpu": None}).endpoint == "gpu"   # other unknown
    free = first_match(both, Request("free"), at(12))
    assert route(both, Request("free"), now=at(12), queues={"cpu": 5, "gpu": 0}).endpoint == "gpu"
    assert overflow(both, free, {"cpu": 4, "gpu": 0}).endpoint == "cpu"


def test_batch_requests_go_to_cpu_and_overflow_to_gpu_on_the_rules_limit():
    policy = load_policy()
    batch = first_match(policy, Request(None, kind="batch"), at(12))
    assert (batch.endpoint, batch.rule, batch.max_queue) == ("cpu", "batch", 20)
    assert "batch request" in batch.reason
    assert queues_needed(policy, batch) == ("cpu", "gpu")              # the rule's limit needs both queues
    assert overflow(policy, batch, {"cpu": 20, "gpu": 0}).endpoint == "cpu"     # at the limit: stays
    moved = overflow(policy, batch, {"cpu": 21, "gpu": 3})
    assert moved.endpoint == "gpu" and moved.reason == "overflow: cpu queue 21 > 20, gpu queue 3 ≤ 10 → gpu"
    assert overflow(policy, batch, {"cpu": 21, "gpu": 11}).endpoint == "cpu"    # the GPU is full too
    # the rule's limit applies to batch requests only: an interactive free request never overflows
    free = first_match(policy, Request("free"), at(12))
    assert free.max_queue is None and overflow(policy, free, {"cpu": 1000, "gpu": 0}).endpoint == "cpu"
    # a batch request that names a tier still takes the batch rule first, also at night
    assert first_match(policy, Request("paid", kind="batch"), at(23)).rule == "batch"


def test_request_kind_and_tier_none():
    policy = policy_with("""
[[rules]]
name = "paid"
when = { tier = "paid" }
use = "gpu"
[[rules]]
name = "interactive"
when = { kind = "interactive" }
use = "gpu"
""")
    assert first_match(policy, Request(None, kind="batch"), at(12)).rule is None   # no tier matches None
    assert first_match(policy, Request(None), at(12)).rule == "interactive"
    with pytest.raises(PolicyError, match="unknown request kind 'bulk'"):
        first_match(policy, Request("paid", kind="bulk"), at(12))


def test_endpoint_workers():
    policy = policy_with("[endpoints.cpu]\nworkers = 4\n")
    assert policy.endpoints["cpu"].workers == 4 and policy.endpoints["gpu"].workers is None


def test_an_endpoint_table_you_write_has_no_limit_unless_you_set_one():
    policy = policy_with('[endpoints.gpu]\nid_env = "GPU_ID"\n')
    assert policy.endpoints["gpu"].max_queue is None
    assert policy.endpoints["gpu"].workflow == BUILTIN_DIR / "workflows_gpu" / "cutout_caption_safety.api.json"
    assert policy.endpoints["cpu"] == load_policy().endpoints["cpu"]


def test_fallback_settings():
    policy = load_policy()
    assert [fallback_for(policy, "gpu", c) for c in ("unreachable", "failed", "timeout")] == ["cpu"] * 3
    assert fallback_for(policy, "cpu", "failed") is None
    off = policy_with("[fallback]\n")
    assert fallback_for(off, "gpu", "failed") is None
    some = policy_with('[fallback]\ngpu = "cpu"\ncpu = "gpu"\non = ["timeout"]\n')
    assert fallback_for(some, "cpu", "timeout") == "gpu" and fallback_for(some, "gpu", "failed") is None


# ----------------------------------------------------------------------------- bad policies


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defualt = 'cpu'\n", r"unknown key\(s\) \['defualt'\] in top level"),
        ("default = 'tpu'\n", r"default must be one of \['cpu', 'gpu'\]"),
        ("[[rules]]\nwhen = { tier = 'free' }\n", r"rules\[1\] has no 'use'"),
        ("[[rules]]\nuse = 'gpu'\nwhen = { premium = true }\n", r"unknown key\(s\) \['premium'\] in rules\[1\].when"),
        ("[[rules]]\nuse = 'gpu'\nwhen = { urgent = 'yes' }\n", "urgent must be true or false"),
        ("[off_peak]\nwindows = ['22-07']\n", "is not 'HH:MM-HH:MM'"),
        ("[off_peak]\nwindows = ['25:00-07:00']\n", "impossible time"),
        ("[off_peak]\nwindows = ['07:00-07:00']\n", "is empty"),
        ("[off_peak]\nwindows = [{ days = ['someday'] }]\n", "unknown day"),
        ("[off_peak]\ntimezone = 'Mars/Olympus'\n", "not a known time zone"),
        ("[endpoints.gpu]\nmax_queue = -1\n", "max_queue must be a whole number"),
        ("[endpoints.gpu]\nworkers = 0\n", "workers must be a whole number ≥ 1"),
        ("[[rules]]\nuse = 'cpu'\nmax_queue = 1.5\n", r"rules\[1\].max_queue must be a whole number ≥ 0"),
        ("[[rules]]\nuse = 'cpu'\nwhen = { kind = 'bulk' }\n", r"rules\[1\].when.kind must be one of \['interactive', 'batch'\]"),
        ("[endpoints.gpu]\ntimeout_s = 0\n", "timeout_s must be a number ≥ 1"),
        ("[endpoints.tpu]\n", r"unknown key\(s\) \['tpu'\] in \[endpoints\]"),
        ("[fallback]\ngpu = 'gpu'\n", "points at itself"),
        ("[fallback]\non = ['always']\n", "fallback.on must be one of"),
        ("wait = 'stream'\n", "wait must be one of"),
        ("base_url = \n", "not valid TOML"),
    ],
)
def test_bad_policy_names_the_key(text, message):
    with pytest.raises(PolicyError, match=message) as caught:
        policy_with(text)
    assert str(caught.value).startswith("test.toml")


def test_policy_file_paths(tmp_path):
    (tmp_path / "flows").mkdir()
    path = tmp_path / "policy.toml"
    path.write_text('[endpoints.cpu]\nworkflow = "flows/cpu.json"\nid = "abc"\nprice_per_second = 0.0002\n')
    policy = load_policy(path)
    assert policy.endpoints["cpu"].workflow == tmp_path / "flows" / "cpu.json"   # beside the policy file
    assert policy.endpoints["cpu"].endpoint_id({}) == "abc"
    assert policy.endpoints["cpu"].price_per_second == pytest.approx(0.0002)
    assert policy.source == str(path)
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="set CUTOUT_GUARD_GPU_ENDPOINT_ID"):
        policy.endpoints["gpu"].endpoint_id({})
    assert policy.endpoints["gpu"].endpoint_id({"CUTOUT_GUARD_GPU_ENDPOINT_ID": " xyz\n"}) == "xyz"


# ----------------------------------------------------------------------------- the request body


def png_bytes(width=8, height=6, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


FLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "CutoutGuardSaveReport", "inputs": {"image": ["1", 0]}},
}


def test_payload_sets_the_load_image_node():
    image = png_bytes()
    body = payload(FLOW, image)
    (uploaded,) = body["input"]["images"]
    assert base64.b64decode(uploaded["image"]) == image
    assert body["input"]["workflow"]["1"]["inputs"]["image"] == uploaded["name"]
    assert body["input"]["workflow"]["2"] == FLOW["2"]
    assert FLOW["1"]["inputs"]["image"] == "input.png"           # the loaded workflow is not changed
    assert uploaded["name"] == upload_name(image) and uploaded["name"].endswith(".png")
    assert upload_name(png_bytes(fmt="JPEG")).endswith(".jpg")
    assert upload_name(png_bytes(9)) != uploaded["name"]          # another image, another name


def test_payload_refuses_what_comfyui_would_not_load():
    with pytest.raises(BadInput, match="not a readable image"):
        upload_name(b"hello")
    gif = io.BytesIO()
    Image.new("P", (4, 4)).save(gif, format="GIF")
    with pytest.raises(BadInput, match="GIF"):
        upload_name(gif.getvalue())


def test_load_image_node_must_be_unambiguous():
    two = {**FLOW, "3": {"class_type": "LoadImage", "inputs": {"image": "b.png"}}}
    with pytest.raises(PolicyError, match="exactly one LoadImage node, found 2"):
        with_image(two, "x.png")
    assert with_image(two, "x.png", "3")["3"]["inputs"]["image"] == "x.png"
    with pytest.raises(PolicyError, match="found 0"):
        with_image({"2": FLOW["2"]}, "x.png")
    with pytest.raises(PolicyError, match="image_node '9' is not a node"):
        with_image(FLOW, "x.png", "9")


def test_load_workflow_refuses_ui_format(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(PolicyError, match="UI workflow, not an API workflow"):
        load_workflow(ui)
    with pytest.raises(PolicyError, match="workflow file not found"):
        load_workflow(tmp_path / "none.json")
    api = tmp_path / "api.json"
    api.write_text(json.dumps(FLOW))
    assert load_workflow(api) == FLOW


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_the_builtin_workflows_are_the_repositorys(name):
    """The built-in policy's workflows live in the package (they ship in the wheel) and are the
    repository's workflow files byte for byte."""
    path = load_policy().endpoints[name].workflow
    assert path.is_relative_to(Path(cutout_guard.router.__file__).resolve().parent)
    assert path.read_bytes() == (REPO / f"workflows_{name}" / "cutout_caption_safety.api.json").read_bytes()


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_repository_workflows_take_one_image(name):
    path = REPO / f"workflows_{name}" / "cutout_caption_safety.api.json"
    body = payload(load_workflow(path), png_bytes())
    flow = body["input"]["workflow"]
    loaders = [n for n in flow.values() if n["class_type"] == "LoadImage"]
    assert [n["inputs"]["image"] for n in loaders] == [body["input"]["images"][0]["name"]]
    provider = {"cpu": "CPU", "gpu": "CUDA"}[name]
    assert any(n["inputs"].get("provider") == provider for n in flow.values())


# ----------------------------------------------------------------------------- the worker's answer


def report_png(**fields) -> bytes:
    text = {"model": "g", "safe": True, "p_unsafe": 0.1, "threshold": 0.5, "reason": "answer 'safe'", "categories": []}
    return encode_png(np.zeros((4, 4, 4), np.float32), make_report(caption="a cat", text=text, unsafe_action="blur", **fields))


def item(data: bytes, filename="out.png", kind="base64") -> dict:
    return {"filename": filename, "type": kind, "data": base64.b64encode(data).decode()}


def test_report_image_picks_the_report_png():
    plain = io.BytesIO()
    Image.new("RGB", (2, 2)).save(plain, format="PNG")
    found = report_image({"images": [item(plain.getvalue(), "preview.png"), item(report_png())],
                          "errors": ["a warning"]})
    assert found.filename == "out.png" and found.report["caption"] == "a cat"
    assert found.warnings == ("a warning",)


def test_report_image_fetches_urls():
    data = report_png()
    seen = []
    found = report_image({"images": [{"filename": "o.png", "type": "s3_url", "data": "https://b/o.png"}]},
                         fetch=lambda url: seen.append(url) or data)
    assert seen == ["https://b/o.png"] and found.png == data


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("text", "output is str"),
        ({"status": "success_no_images", "images": []}, "the output has no images"),
        ({"images": [{"filename": "a.png"}]}, r"images\[0\] is not"),
        ({"images": [{"filename": "a.png", "type": "url", "data": "x"}]}, "unknown image type 'url'"),
        ({"images": [item(b"not a png")]}, "not a readable PNG"),
        ({"images": [item(report_png()), item(report_png(), "b.png")]}, "expected one report image"),
        ({"images": [{"filename": "a.png", "type": "s3_url", "data": "https://x"}]}, "no way to fetch"),
        ({"images": [{"filename": "a.png", "type": "s3_url", "data": "simulated_uploaded/1f2e3d4c.png"}]},
         r"not an http\(s\) URL: the worker's bucket upload did not happen .* BUCKET_ACCESS_KEY_ID"),
        ({"images": [{"filename": "a.png", "type": "s3_url", "data": "file:///tmp/a.png"}]}, "BUCKET_ENDPOINT_URL"),
    ],
)
def test_report_image_malformed(output, message):
    with pytest.raises(MalformedOutput, match=message):
        report_image(output, endpoint="gpu", job_id="j1")


def test_report_with_a_newer_schema_is_malformed():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("cutout_guard", json.dumps({"schema": 3}))
    buffer = io.BytesIO()
    Image.new("RGBA", (2, 2)).save(buffer, format="PNG", pnginfo=info)
    with pytest.raises(MalformedOutput, match="unsupported report schema 3"):
        report_image({"images": [item(buffer.getvalue())]})


def test_worker_errors():
    assert worker_errors({"status": "FAILED", "error": "Job processing failed",
                          "output": {"details": ["Node 5: out of memory", "No outputs"]}}) == [
        "Job processing failed", "Node 5: out of memory", "No outputs"]
    sdk = json.dumps({"error_type": "<class 'RuntimeError'>", "error_message": "CUDA error", "error_traceback": "..."})
    assert worker_errors({"status": "FAILED", "error": sdk}) == ["RuntimeError: CUDA error"]
    assert worker_errors({"status": "FAILED"}) == []


def test_router_imports_without_comfyui_or_torch():
    code = ("import sys, cutout_guard.router, cutout_guard.router.cli; "
            "bad = [m for m in ('torch', 'comfy', 'folder_paths', 'transformers', 'onnxruntime', 'llama_cpp', 'runpod') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
