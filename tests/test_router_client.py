"""The router against real servers on loopback: two RunPod endpoints, each the runpod SDK's own
local API server running ``tests/runpod_handler.py`` behind a small gateway that supplies RunPod's
URL layout and what the simulator lacks (see ``tests/runpod_gateway.py``). They start once for
this module.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("runpod", reason="the runpod SDK (test extra) runs the local endpoints")

from cutout_guard.core.report import read_png  # noqa: E402
from cutout_guard.router import (  # noqa: E402
    EndpointUnreachable, JobFailed, JobTimeout, MalformedOutput, PolicyError, Router, load_policy,
)
from cutout_guard.router.cli import submit_main  # noqa: E402
from runpod_gateway import FAST, KEY, NIGHT, NOON, Gateway, api_workflow, free_port, gateway, photo, servers  # noqa: E402,F401

# ----------------------------------------------------------------------------- helpers


def write_policy(tmp_path: Path, gateway: Gateway, *, cpu: dict | None = None, gpu: dict | None = None,
                 extra: str = "", cpu_endpoint: str = "", gpu_endpoint: str = "", gpu_id: str = "gpu-ep",
                 gpu_timeout: float = 20) -> Path:
    """A policy file: the default rules, the endpoints at the gateway, workflows in tmp_path."""
    for name, flow in (("cpu", cpu or api_workflow("CPU", "fp32", 0)), ("gpu", gpu or api_workflow("CUDA", "fp16", -1))):
        (tmp_path / f"{name}.api.json").write_text(json.dumps(flow))
    text = f"""
base_url = "{gateway.url}"
{extra}
[endpoints.cpu]
id = "cpu-ep"
workflow = "cpu.api.json"
timeout_s = 20
{cpu_endpoint}
[endpoints.gpu]
id = "{gpu_id}"
workflow = "gpu.api.json"
timeout_s = {gpu_timeout}
max_queue = 10
{gpu_endpoint}
"""
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def router(path: Path, **options) -> Router:
    return Router(load_policy(path), env={"RUNPOD_API_KEY": KEY}, **{**FAST, **options})


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there once the probe socket closed


# ----------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("tier", "urgent", "now", "endpoint", "rule"),
    [
        ("free", True, NOON, "gpu", "urgent"),
        ("paid", False, NOON, "gpu", "paid"),
        ("free", False, NIGHT, "cpu", "off-peak"),
        ("free", False, NOON, "cpu", "free"),
    ],
)
@pytest.mark.parametrize("wait", ["run", "runsync"])
def test_each_default_rule_routes_to_its_endpoint(gateway, tmp_path, tier, urgent, now, endpoint, rule, wait):
    result = router(write_policy(tmp_path, gateway)).submit(photo(), tier=tier, urgent=urgent, now=now, wait=wait)
    assert result.endpoint == endpoint
    assert result.route[0].startswith(f"rule '{rule}'")
    assert result.filename.startswith(f"{endpoint}_")               # that endpoint's server answered
    expected = {"cpu": ("CPU", "fp32", 0), "gpu": ("CUDA", "fp16", -1)}[endpoint]
    devices = result.report["devices"]
    assert (devices["provider"], devices["precision"], devices["n_gpu_layers"]) == expected  # its workflow
    assert gateway.count("POST", f"/{endpoint}-ep/{wait}") == 1
    if wait == "run":
        assert gateway.count("GET", f"/{endpoint}-ep/status/{result.job_id}") >= 1
    assert all(auth == f"Bearer {KEY}" for *_, auth in gateway.log)


def test_rule_order_is_the_files(gateway, tmp_path):
    rules = """
[[rules]]
name = "night"
when = { off_peak = true }
use = "cpu"

[[rules]]
name = "paid"
when = { tier = ["paid", "team"] }
use = "gpu"
"""
    r = router(write_policy(tmp_path, gateway, extra=rules))
    assert r.submit(photo(), tier="paid", now=NIGHT).endpoint == "cpu"   # the off-peak rule comes first
    assert r.submit(photo(), tier="team", now=NOON).endpoint == "gpu"
    with pytest.raises(PolicyError, match="unknown tier 'piad'"):
        r.submit(photo(), tier="piad", now=NOON)


def test_the_result_carries_the_report(gateway, tmp_path):
    image = photo(30, 20)
    result = router(write_policy(tmp_path, gateway)).submit(image, tier="paid", now=NOON)
    assert result.caption == "a picture 30 pixels wide and 20 high"     # the image reached the worker
    assert result.verdict == "safe" and result.safe is True and result.categories == ()
    assert result.p_unsafe == pytest.approx(0.02)
    assert read_png(result.png) == result.report
    cutout = np.asarray(Image.open(io.BytesIO(result.png)))
    assert cutout.shape == (20, 30, 4)
    assert cutout[0, 0, 3] == 0 and cutout[8, 10, 3] == 255              # background out, subject in
    assert result.timings.stages == {"cutout": 0.5, "image_check": 0.2, "caption": 1.25, "safety_check": 0.75}
    assert result.timings.wall_s > 0
    assert result.cost_usd is None                                       # no price in this policy
    assert result.endpoint_id == "gpu-ep" and result.job_id


def test_unsafe_verdict_and_categories(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, gpu=api_workflow("CUDA", "fp16", -1, mode="unsafe"))
    result = router(path).submit(photo(), tier="paid", now=NOON)
    assert result.verdict == "unsafe" and result.safe is False
    assert [(c.code, c.name) for c in result.categories] == [("S1", "Violent Crimes")]
    assert result.p_unsafe == pytest.approx(0.91)


def test_cost_estimate_uses_the_endpoint_price(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, cpu_endpoint="price_per_second = 0.5")
    result = router(path).submit(photo(), tier="free", now=NOON)
    # the simulator reports no executionTime, so the estimate falls back to the job's wall time
    assert result.cost_basis == "wall time"
    assert 0 < result.cost_usd <= 0.5 * result.timings.wall_s + 1e-6


def test_cost_counts_execution_and_delay_time_when_runpod_reports_them(gateway, tmp_path):
    gateway.timing["cpu-ep"] = (1500, 4000)  # delayTime, executionTime in ms
    path = write_policy(tmp_path, gateway, cpu_endpoint="price_per_second = 0.01")
    result = router(path).submit(photo(), tier="free", now=NOON)
    assert result.cost_basis == "executionTime + delayTime"
    assert result.cost_usd == pytest.approx(5.5 * 0.01)
    assert (result.timings.queue_s, result.timings.execution_s) == (1.5, 4.0)


def test_run_refused_with_429_is_sent_again(gateway, tmp_path):
    gateway.run_faults["cpu-ep"] = [429]   # rate limited: nothing was queued
    result = router(write_policy(tmp_path, gateway)).submit(photo(), tier="free", now=NOON)
    assert result.endpoint == "cpu"
    assert gateway.count("POST", "/cpu-ep/run") == 2 and len(gateway.sent) == 1


def test_run_answered_with_503_is_not_sent_again(gateway, tmp_path):
    gateway.run_faults["cpu-ep"] = [503]   # a job may or may not be queued behind a 5xx
    with pytest.raises(EndpointUnreachable, match="HTTP 503"):
        router(write_policy(tmp_path, gateway, extra="[fallback]\n")).submit(photo(), tier="free", now=NOON)
    assert gateway.count("POST", "/cpu-ep/run") == 1


# ----------------------------------------------------------------------------- overflow


def test_overflow_to_cpu_when_the_gpu_queue_is_long(gateway, tmp_path):
    gateway.queue["gpu-ep"] = 11
    result = router(write_policy(tmp_path, gateway)).submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "cpu" and result.filename.startswith("cpu_")
    assert result.reason.startswith("overflow: gpu queue 11 > 10")
    assert result.report["devices"]["provider"] == "CPU"                 # and the CPU workflow went with it
    assert gateway.count("GET", "/gpu-ep/health") == 1
    assert gateway.count("POST", "/gpu-ep/run") == 0


def test_no_overflow_at_the_limit_or_when_both_are_full(gateway, tmp_path):
    gateway.queue["gpu-ep"] = 10
    r = router(write_policy(tmp_path, gateway, cpu_endpoint="max_queue = 3"))
    assert r.submit(photo(), tier="paid", now=NOON).endpoint == "gpu"
    gateway.queue.update({"gpu-ep": 50, "cpu-ep": 4})
    result = r.submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "gpu"
    assert "cpu queue 4 > 3 too" in result.route[-1]


def test_reverse_overflow_when_configured(gateway, tmp_path):
    gateway.queue.update({"cpu-ep": 8, "gpu-ep": 2})
    path = write_policy(tmp_path, gateway, cpu_endpoint="max_queue = 5")
    result = router(path).submit(photo(), tier="free", now=NOON)
    assert result.endpoint == "gpu" and result.filename.startswith("gpu_")
    assert "overflow: cpu queue 8 > 5, gpu queue 2 ≤ 10" in result.reason
    # without a CPU limit the CPU queue is never read
    gateway.log.clear()
    assert router(write_policy(tmp_path, gateway)).submit(photo(), tier="free", now=NOON).endpoint == "cpu"
    assert gateway.count("GET", "/cpu-ep/health") == 0


def test_health_is_retried_after_503(gateway, tmp_path):
    gateway.health_faults["gpu-ep"] = [503, 503]
    gateway.queue["gpu-ep"] = 30
    result = router(write_policy(tmp_path, gateway)).submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "cpu"
    assert gateway.count("GET", "/gpu-ep/health") == 3


def test_status_polls_are_retried(gateway, tmp_path):
    gateway.status_faults["cpu-ep"] = [502, 429]
    result = router(write_policy(tmp_path, gateway)).submit(photo(), tier="free", now=NOON)
    assert result.endpoint == "cpu"
    assert gateway.count("GET", f"/cpu-ep/status/{result.job_id}") == 3
    assert gateway.count("POST", "/cpu-ep/run") == 1


def test_unknown_queue_length_does_not_overflow(gateway, tmp_path):
    gateway.health_faults["gpu-ep"] = [503] * 3
    gateway.queue["gpu-ep"] = 30
    result = router(write_policy(tmp_path, gateway)).submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "gpu"
    assert "gpu queue length unknown" in result.route[-1]


# ----------------------------------------------------------------------------- fallback


def test_fallback_to_cpu_when_the_gpu_is_unreachable(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, gpu_endpoint=f'url = "{closed_port_url()}"')
    result = router(path).submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "cpu" and result.filename.startswith("cpu_")
    assert result.route[0].startswith("rule 'paid'")
    assert result.reason.startswith("fallback: gpu unreachable")
    assert result.report["devices"]["provider"] == "CPU"


def test_fallback_to_cpu_when_the_gpu_job_fails(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, gpu=api_workflow("CUDA", "fp16", -1, mode="fail"))
    result = router(path).submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "cpu"
    assert result.reason.startswith("fallback: gpu failed")
    assert gateway.count("POST", "/gpu-ep/run") == 1 and gateway.count("POST", "/cpu-ep/run") == 1


def test_no_fallback_when_the_policy_has_none(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, gpu_endpoint=f'url = "{closed_port_url()}"', extra="[fallback]\n")
    with pytest.raises(EndpointUnreachable, match="gpu endpoint unreachable.*3 tries.*could not connect"):
        router(path).submit(photo(), tier="paid", now=NOON)
    assert gateway.count("POST", "/cpu-ep/run") == 0


def test_cpu_failures_do_not_fall_back(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, cpu=api_workflow("CPU", "fp32", 0, mode="fail"))
    with pytest.raises(JobFailed):
        router(path).submit(photo(), tier="free", now=NOON)
    assert gateway.count("POST", "/gpu-ep/run") == 0


# ----------------------------------------------------------------------------- timeout


@pytest.mark.parametrize("wait", ["run", "runsync"])
def test_timeout_cancels_the_job(gateway, tmp_path, wait):
    gateway.held.add("slow-ep")
    path = write_policy(tmp_path, gateway, extra="[fallback]\n", gpu_id="slow-ep", gpu_timeout=1)
    start = time.monotonic()
    with pytest.raises(JobTimeout, match="did not finish in time; it was cancelled") as caught:
        router(path).submit(photo(), tier="paid", now=NOON, wait=wait)
    assert 1.0 <= time.monotonic() - start < 8
    assert caught.value.cancelled and caught.value.job_id == "held-1"
    assert gateway.cancelled == ["held-1"]
    assert gateway.count("POST", "/slow-ep/cancel/held-1") == 1


def test_a_timed_out_gpu_job_falls_back_to_cpu(gateway, tmp_path):
    gateway.held.add("slow-ep")
    path = write_policy(tmp_path, gateway, gpu_id="slow-ep", gpu_timeout=1)
    result = router(path).submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "cpu" and result.reason.startswith("fallback: gpu timeout")
    assert gateway.cancelled == ["held-1"]


# ----------------------------------------------------------------------------- failures


def test_failing_job_raises_job_failed_with_the_workers_errors(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, cpu=api_workflow("CPU", "fp32", 0, mode="fail"))
    with pytest.raises(JobFailed, match="cpu endpoint: job .* failed: Job processing failed") as caught:
        router(path).submit(photo(), tier="free", now=NOON)
    assert caught.value.errors == ("Job processing failed",)  # the simulator drops output.details on failure


def test_handler_exception_is_reported_readably(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, cpu=api_workflow("CPU", "fp32", 0, mode="raise"))
    with pytest.raises(JobFailed) as caught:
        router(path).submit(photo(), tier="free", now=NOON, wait="runsync")
    assert caught.value.errors == ("ValueError: the test handler was asked to raise",)


def test_workflow_without_the_uploaded_image_fails_like_comfyui(gateway, tmp_path):
    flow = api_workflow("CPU", "fp32", 0)
    flow["7"] = {"class_type": "LoadImage", "inputs": {"image": "other.png"}}
    path = write_policy(tmp_path, gateway, cpu=flow, cpu_endpoint='image_node = "7"')
    with pytest.raises(JobFailed, match="Workflow validation failed") as caught:
        router(path).submit(photo(), tier="free", now=NOON)  # node 7 got the name, node 1 kept its own
    lines = caught.value.errors[0].splitlines()   # worker-comfyui's text, whole
    assert lines[0] == "Workflow validation failed:"
    assert lines[1].startswith("• Node 1 (errors): [{") and "'details': 'image - Invalid image file: example.png'" in lines[1]
    assert lines[2:] == ["• Node 1 (dependent_outputs): ['6']", "• Node 1 (class_type): LoadImage"]


@pytest.mark.parametrize(("mode", "message"), [
    ("no_report", "no Cutout Guard report image"),
    ("bad_base64", "not valid base64"),
    ("not_images", "no 'images' list"),
])
def test_malformed_answer(gateway, tmp_path, mode, message):
    path = write_policy(tmp_path, gateway, gpu=api_workflow("CUDA", "fp16", -1, mode=mode))
    with pytest.raises(MalformedOutput, match=message):
        router(path).submit(photo(), tier="paid", now=NOON)
    assert gateway.count("POST", "/cpu-ep/run") == 0   # a malformed answer is not a reason to fall back


def test_worker_warnings_travel_with_the_result(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, cpu=api_workflow("CPU", "fp32", 0, mode="warn"))
    result = router(path).submit(photo(), tier="free", now=NOON)
    assert result.warnings == ("Failed to fetch image data for cpu_cutout_guard_00002_.png from /view endpoint.",)
    assert result.caption.startswith("a picture")


def test_s3_url_output_is_downloaded_without_the_api_key(gateway, tmp_path):
    url = f"{gateway.url}/bucket/job-output.png"
    path = write_policy(tmp_path, gateway, cpu=api_workflow("CPU", "fp32", 0, mode="s3", url=url))
    result = router(path).submit(photo(), tier="free", now=NOON)
    assert result.caption.startswith("a picture 24 pixels wide")
    downloads = [auth for method, p, auth in gateway.log if p == "/bucket/job-output.png"]
    assert downloads == [None]


def test_s3_url_without_bucket_keys_is_a_malformed_output(gateway, tmp_path, monkeypatch, capsys):
    """worker-comfyui with BUCKET_ENDPOINT_URL but no keys: the SDK keeps the file on the worker
    and answers its relative path; that names the worker's bucket settings, not the policy."""
    path = write_policy(tmp_path, gateway, gpu=api_workflow("CUDA", "fp16", -1, mode="s3_no_keys"))
    with pytest.raises(MalformedOutput, match=r"s3_url 'simulated_uploaded/\w+\.png', which is not an http\(s\) URL") as caught:
        router(path).submit(photo(), tier="paid", now=NOON)
    assert "BUCKET_ACCESS_KEY_ID" in str(caught.value) and "BUCKET_ENDPOINT_URL" in str(caught.value)
    assert caught.value.endpoint == "gpu" and caught.value.job_id
    assert gateway.count("POST", "/cpu-ep/run") == 0          # the worker's settings: no fallback either
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    image = tmp_path / "cat.png"
    image.write_bytes(photo())
    code = submit_main([str(image), "--tier", "paid", "--policy", str(path), "--at", NOON.isoformat(),
                        "--out", str(tmp_path / "cat_cutout.png")])
    err = capsys.readouterr().err
    assert code == 6, err
    assert "BUCKET_SECRET_ACCESS_KEY" in err and "check base_url" not in err
    assert not (tmp_path / "cat_cutout.png").exists()


def test_wrong_api_key_is_named(gateway, tmp_path):
    path = write_policy(tmp_path, gateway, extra="[fallback]\n")
    r = Router(load_policy(path), env={"RUNPOD_API_KEY": "wrong"}, **FAST)
    with pytest.raises(EndpointUnreachable, match="refused the API key"):
        r.submit(photo(), tier="free", now=NOON)


def test_run_is_not_sent_twice_when_the_answer_is_lost(gateway, tmp_path):
    gateway.drop_run.add("gpu-ep")
    path = write_policy(tmp_path, gateway, extra="[fallback]\n")
    with pytest.raises(EndpointUnreachable, match="not sent again"):
        router(path).submit(photo(), tier="paid", now=NOON)
    assert gateway.count("POST", "/gpu-ep/run") == 1


def test_missing_key_and_endpoint_id_name_the_variable(gateway, tmp_path):
    path = write_policy(tmp_path, gateway)
    with pytest.raises(PolicyError, match="set RUNPOD_API_KEY"):
        Router(load_policy(path), env={}).submit(photo(), tier="free", now=NOON)
    default = Router(load_policy(), env={"RUNPOD_API_KEY": KEY})
    with pytest.raises(PolicyError, match="CUTOUT_GUARD_CPU_ENDPOINT_ID"):
        default.client("cpu")


# ----------------------------------------------------------------------------- both endpoints


def test_the_same_call_serves_both_endpoints(gateway, tmp_path):
    r = router(write_policy(tmp_path, gateway))
    image = photo()
    results = {tier: r.submit(image, tier=tier, now=NOON) for tier in ("free", "paid")}
    cpu, gpu = results["free"], results["paid"]
    assert (cpu.endpoint, gpu.endpoint) == ("cpu", "gpu")
    assert cpu.filename.startswith("cpu_") and gpu.filename.startswith("gpu_")
    assert cpu.report["devices"] == {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0}
    assert gpu.report["devices"] == {"provider": "CUDA", "precision": "fp16", "n_gpu_layers": -1}
    assert cpu.caption == gpu.caption
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(cpu.png))), np.asarray(Image.open(io.BytesIO(gpu.png))))


def test_talks_to_the_simulator_directly(servers, tmp_path):
    """No gateway: the SDK's server at its root, through runsync (its /health is missing, so the
    queue length is unknown and nothing overflows)."""
    simulator = servers.simulators["gpu-ep"]
    path = write_policy(tmp_path, servers, gpu_endpoint=f'url = "{simulator}"', extra='wait = "runsync"')
    result = router(path).submit(photo(), tier="paid", now=NOON)
    assert result.endpoint == "gpu" and result.filename.startswith("gpu_")
    assert "gpu queue length unknown" in result.route[-1]


# ----------------------------------------------------------------------------- real workflows

def test_the_repository_workflows_go_to_their_endpoints(gateway, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("CUTOUT_GUARD_CPU_ENDPOINT_ID", "cpu-ep")
    monkeypatch.setenv("CUTOUT_GUARD_GPU_ENDPOINT_ID", "gpu-ep")
    import dataclasses

    policy = dataclasses.replace(load_policy(), base_url=gateway.url)   # the built-in default policy
    r = Router(policy, **FAST)
    for tier, name, provider in (("free", "cpu", "CPU"), ("paid", "gpu", "CUDA")):
        result = r.submit(photo(), tier=tier, now=NOON)
        assert result.endpoint == name and result.filename.startswith(f"{name}_")
        assert result.report["devices"]["provider"] == provider


# ----------------------------------------------------------------------------- command line


def test_submit_command(gateway, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    image = tmp_path / "cat.png"
    image.write_bytes(photo())
    path = write_policy(tmp_path, gateway)
    out = tmp_path / "out" / "cat_cutout.png"
    out.parent.mkdir()
    assert submit_main([str(image), "--tier", "paid", "--urgent", "--policy", str(path), "--out", str(out), "--json",
                        "--at", NOON.isoformat()]) == 0
    captured = capsys.readouterr()
    try:
        printed = json.loads(captured.out)
    except ValueError:
        pytest.fail(f"--json printed more than JSON: {captured.out!r}; stderr: {captured.err!r}")
    assert printed["endpoint"] == "gpu" and printed["route"][0].startswith("rule 'urgent'")
    assert read_png(out) == json.loads(out.with_suffix(".json").read_text())
    assert printed["caption"] == read_png(out)["caption"]

    monkeypatch.chdir(tmp_path)
    assert submit_main([str(image), "--tier", "free", "--policy", str(path), "--at", "2026-11-25T12:00Z"]) == 0
    text = capsys.readouterr().out
    assert "served by cpu" in text and "rule 'free'" in text and "verdict: safe" in text
    assert (tmp_path / "cat_cutout.png").is_file()

    assert submit_main([str(image), "--tier", "paid", "--policy", str(path), "--route-only", "--at", "2026-11-25T12:00"]) == 0
    assert capsys.readouterr().out.startswith("gpu: rule 'paid'")


@pytest.mark.parametrize(("at", "moment", "rule"), [
    ("2026-11-25T12:00", NOON, "free"),                # peak hours, UTC without an offset
    ("2026-11-25T23:30Z", NIGHT, "off-peak"),          # inside the default 22:00-07:00 window
    ("2026-11-26T00:30+01:00", NIGHT, "off-peak"),     # the same instant written in another zone
    ("2026-11-25T13:00+01:00", NOON, "free"),
])
def test_submit_at_decides_at_that_time(gateway, tmp_path, monkeypatch, capsys, at, moment, rule):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    image = tmp_path / "cat.png"
    image.write_bytes(photo())
    path = write_policy(tmp_path, gateway)
    out = tmp_path / "cat_cutout.png"
    assert submit_main([str(image), "--tier", "free", "--policy", str(path), "--out", str(out), "--at", at]) == 0
    text = capsys.readouterr().out
    assert "served by cpu" in text and f"rule '{rule}'" in text
    assert submit_main([str(image), "--tier", "free", "--policy", str(path), "--route-only", "--json", "--at", at]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["route"][0].startswith(f"rule '{rule}'")
    assert printed["at"] == moment.isoformat()


def test_submit_without_at_decides_at_the_clock(wall_clock, gateway, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    path = write_policy(tmp_path, gateway)
    assert submit_main([str(tmp_path / "unused.png"), "--tier", "free", "--policy", str(path), "--route-only",
                        "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = "off-peak" if wall_clock == NIGHT else "free"
    assert printed["route"][0].startswith(f"rule '{expected}'")
    assert datetime.fromisoformat(printed["at"]) == wall_clock


def test_bad_at_is_a_usage_error(gateway, tmp_path, capsys):
    path = write_policy(tmp_path, gateway)
    assert submit_main([str(tmp_path / "cat.png"), "--tier", "free", "--policy", str(path), "--at", "tonight"]) == 2
    assert "'tonight' is not ISO 8601" in capsys.readouterr().err


def test_submit_command_exit_codes(gateway, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    image = tmp_path / "cat.png"
    image.write_bytes(photo())
    path = write_policy(tmp_path, gateway, cpu=api_workflow("CPU", "fp32", 0, mode="fail"))
    at = ["--at", NOON.isoformat()]
    assert submit_main([str(image), "--tier", "free", "--policy", str(path), *at]) == 4
    assert "worker: Job processing failed" in capsys.readouterr().err
    assert submit_main([str(image), "--tier", "gold", "--policy", str(path), *at]) == 2
    assert submit_main([str(tmp_path / "missing.png"), "--tier", "free", "--policy", str(path), *at]) == 2
