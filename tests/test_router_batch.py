"""`cutout-guard run PHOTOS --endpoint NAME|auto` against two local RunPod endpoints at once.

The endpoints are the runpod SDK's local API server running ``tests/runpod_handler.py`` behind the
gateway of ``tests/runpod_gateway.py``, which counts the jobs in flight and the images sent.
Every loop here is bounded; only loopback addresses are used; the servers stop with the module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("runpod", reason="the runpod SDK (test extra) runs the local endpoints")

from cutout_guard.app import cli  # noqa: E402
from cutout_guard.core.report import read_png  # noqa: E402
from cutout_guard.core.results import last_entries  # noqa: E402
from cutout_guard.router import load_policy  # noqa: E402
from cutout_guard.router.batch import CANCELLED, Batch  # noqa: E402
from cutout_guard.router.errors import PolicyError  # noqa: E402
from runpod_gateway import FAST, KEY, NOON, api_workflow, gateway, photo, servers  # noqa: E402,F401


def write_policy(tmp_path: Path, gateway, *, cpu: dict | None = None, gpu_id: str = "gpu-ep", rules: str = "",
                 cpu_endpoint: str = "", gpu_endpoint: str = "") -> Path:
    for name, flow in (("cpu", cpu or api_workflow("CPU", "fp32", 0)), ("gpu", api_workflow("CUDA", "fp16", -1))):
        (tmp_path / f"{name}.api.json").write_text(json.dumps(flow))
    path = tmp_path / "policy.toml"
    path.write_text(f"""
base_url = "{gateway.url}"
[endpoints.cpu]
id = "cpu-ep"
workflow = "cpu.api.json"
timeout_s = 20
price_per_second = 0.0001
{cpu_endpoint}
[endpoints.gpu]
id = "{gpu_id}"
workflow = "gpu.api.json"
timeout_s = 20
max_queue = 10
price_per_second = 0.001
{gpu_endpoint}
{rules}
""")
    return path


def photos(folder: Path, count: int, *, widths: dict[int, int] | None = None) -> list[cli.Item]:
    """``count`` different PNGs (image i has shade i; ``widths`` maps an index to another width)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"img{i:03d}.png").write_bytes(photo(width=(widths or {}).get(i, 24), shade=i))
    items, problems = cli.collect_inputs([str(folder)], folder.parent / "out")
    assert problems == [] and len(items) == count
    return items


def batch(path: Path, out: Path, **options) -> Batch:
    return Batch(load_policy(path), out, env={"RUNPOD_API_KEY": KEY}, now=NOON, **{**FAST, **options})


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def wait_for(predicate, seconds: float, what: str) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def cli_process(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "RUNPOD_API_KEY": KEY}
    return subprocess.Popen([sys.executable, "-m", "cutout_guard", "run", *args, "--at", NOON.isoformat()], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------- outputs


def test_remote_run_writes_what_the_local_run_writes(gateway, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    items = photos(tmp_path / "in", 6)
    out = tmp_path / "out"
    policy = write_policy(tmp_path, gateway)
    assert cli.main(["run", str(tmp_path / "in"), "--out", str(out), "--endpoint", "cpu", "--routing-policy", str(policy),
                     "--concurrency", "2"]) == 0
    printed = capsys.readouterr().out
    assert "6 done, 0 failed, 0 skipped" in printed and "| cpu " in printed
    entries = last_entries(out / "results.jsonl")
    for item in items:
        entry = entries[item.output]
        report = read_png(out / item.output)
        assert report == json.loads((out / item.output).with_suffix(".json").read_text())
        assert entry["error"] is None and entry["file"] == item.label
        # the local run's fields (tests/test_cli.py reads them), plus where the job ran
        assert set(entry) == {"file", "output", "caption", "verdict", "image", "text", "seconds", "error", "replaced_text", "job"}
        assert entry["caption"] == report["caption"] == "a picture 24 pixels wide and 16 high"
        assert entry["verdict"] == "safe" and entry["text"] == report["text"] and entry["image"] == report["image"]
        assert entry["seconds"] == report["seconds"]
        assert entry["job"]["endpoint"] == "cpu" and entry["job"]["reason"] == "--endpoint cpu"
        assert entry["job"]["cost_basis"] == "wall time"           # the simulator reports no timings
        assert entry["job"]["cost_usd"] == pytest.approx(entry["job"]["billed_s"] * 0.0001, abs=1e-6)
    # every job's id was written down before its result came back
    submitted = [e["job"]["id"] for e in lines(out) if e.get("status") == "submitted"]
    finished = [e["job"]["id"] for e in lines(out) if e.get("status") is None]
    assert sorted(submitted) == sorted(finished) and len(set(submitted)) == 6
    assert sorted(gateway.images_sent().values()) == [1] * 6 and gateway.count("POST", "/gpu-ep/run") == 0

    # a second run sends nothing
    assert cli.main(["run", str(tmp_path / "in"), "--out", str(out), "--endpoint", "cpu", "--routing-policy", str(policy)]) == 0
    assert "0 done, 0 failed, 6 skipped" in capsys.readouterr().out
    assert len(gateway.sent) == 6


def test_cost_from_runpods_timings_and_the_summary(gateway, tmp_path):
    gateway.timing["cpu-ep"] = (500, 2000)
    out = tmp_path / "out"
    report = batch(write_policy(tmp_path, gateway), out, endpoint="cpu", concurrency=3).run(photos(tmp_path / "in", 5), progress=False)
    assert (report.done, report.failed) == (5, 0)
    totals = report.endpoints["cpu"]
    assert totals.images == 5 and totals.billed_s == pytest.approx(12.5)      # 5 × (0.5 + 2.0) s
    assert totals.cost_usd == pytest.approx(12.5 * 0.0001)
    job = last_entries(out / "results.jsonl")["img000.png"]["job"]
    assert (job["delay_s"], job["execution_s"], job["cost_basis"]) == (0.5, 2.0, "executionTime + delayTime")
    table = report.table()
    assert [c.strip() for c in table.splitlines()[0].split("|")[1:-1]] == [
        "endpoint", "images", "failures", "median s", "p95 s", "billed s", "cost $"]
    assert "| cpu " in table and "12.5" in table and "0.00125" in table


# ----------------------------------------------------------------------------- concurrency


def test_concurrency_bound_holds_across_both_endpoints(gateway, tmp_path):
    gateway.min_run_s.update({"cpu-ep": 0.2, "gpu-ep": 0.2})
    gateway.workers.update({"cpu-ep": 1, "gpu-ep": 8})
    rules = '[[rules]]\nname = "batch"\nwhen = { kind = "batch" }\nuse = "cpu"\nmax_queue = 1\n'
    out = tmp_path / "out"
    report = batch(write_policy(tmp_path, gateway, rules=rules), out, concurrency=4).run(photos(tmp_path / "in", 24), progress=False)
    assert (report.done, report.failed) == (24, 0)
    assert gateway.max_total_inflight == 4                     # the bound was used and never passed
    assert set(report.endpoints) == {"cpu", "gpu"}             # and both endpoints served


def test_default_concurrency_is_the_endpoints_workers(gateway, tmp_path):
    gateway.workers.update({"cpu-ep": 3, "gpu-ep": 2})
    path = write_policy(tmp_path, gateway)
    assert batch(path, tmp_path / "a", endpoint="cpu").default_concurrency() == 3         # from /health
    assert batch(path, tmp_path / "b").default_concurrency() == 5                         # auto: both
    (tmp_path / "own").mkdir()
    assert batch(write_policy(tmp_path / "own", gateway, cpu_endpoint="workers = 7"), tmp_path / "c",
                 endpoint="cpu").default_concurrency() == 7                               # the policy's
    gateway.workers.update({"cpu-ep": 0})                                                 # scaled to zero
    assert batch(path, tmp_path / "d", endpoint="cpu").default_concurrency() == 1


def test_overflow_from_cpu_to_gpu_when_the_cpu_queue_is_long(gateway, tmp_path):
    """The default policy's batch rule: CPU, then GPU once the CPU's queue is over the rule's limit."""
    gateway.min_run_s.update({"cpu-ep": 0.3, "gpu-ep": 0.05})
    gateway.workers.update({"cpu-ep": 1, "gpu-ep": 4})
    rules = '[[rules]]\nname = "batch"\nwhen = { kind = "batch" }\nuse = "cpu"\nmax_queue = 2\n'
    out = tmp_path / "out"
    report = batch(write_policy(tmp_path, gateway, rules=rules), out, concurrency=6).run(photos(tmp_path / "in", 18), progress=False)
    assert report.done == 18
    entries = last_entries(out / "results.jsonl").values()
    on_cpu = [e for e in entries if e["job"]["endpoint"] == "cpu"]
    on_gpu = [e for e in entries if e["job"]["endpoint"] == "gpu"]
    assert on_cpu and on_gpu
    assert all(e["job"]["reason"].startswith("rule 'batch'") for e in on_cpu)
    assert all(e["job"]["reason"].startswith("overflow: cpu queue") and "> 2" in e["job"]["reason"] for e in on_gpu)
    assert all(e["caption"] for e in entries)


# ----------------------------------------------------------------------------- failures


def test_failing_and_malformed_jobs_are_recorded_and_the_batch_goes_on(gateway, tmp_path):
    flow = api_workflow("CPU", "fp32", 0, by_width={"13": "fail", "14": "bad_base64", "15": "no_report",
                                                    "17": "not_images"})
    path = write_policy(tmp_path, gateway, cpu=flow)
    items = photos(tmp_path / "in", 10, widths={2: 13, 4: 14, 6: 15, 8: 17})
    out = tmp_path / "out"
    report = batch(path, out, endpoint="cpu", concurrency=3).run(items, progress=False)
    assert (report.done, report.failed) == (6, 4)
    entries = last_entries(out / "results.jsonl")
    errors = {name: e["error"] for name, e in entries.items() if e["error"]}
    assert sorted(errors) == ["img002.png", "img004.png", "img006.png", "img008.png"]
    assert "failed: Job processing failed" in errors["img002.png"]
    assert "not valid base64" in errors["img004.png"]
    assert "no Cutout Guard report image" in errors["img006.png"]
    assert "no 'images' list" in errors["img008.png"]
    assert all(entries[name]["job"]["id"] for name in errors)     # which job failed is on the line
    assert not (out / "img002.png").exists() and (out / "img003.png").is_file()
    assert report.endpoints["cpu"].failures == 4

    # the next run sends the failed images again, and only them
    report = batch(path, out, endpoint="cpu", concurrency=3).run(items, progress=False)
    assert (report.done, report.failed, report.skipped) == (0, 4, 6)
    assert sorted(gateway.images_sent().values()) == [1] * 6 + [2] * 4


def test_bad_inputs_are_named(gateway, tmp_path):
    path = write_policy(tmp_path, gateway)
    with pytest.raises(PolicyError, match="--endpoint 'tpu'"):
        batch(path, tmp_path / "out", endpoint="tpu")
    with pytest.raises(PolicyError, match="set RUNPOD_API_KEY"):
        Batch(load_policy(path), tmp_path / "out", env={})
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    items, _ = cli.collect_inputs([str(folder)], tmp_path / "out")
    report = batch(path, tmp_path / "out", endpoint="cpu").run(items, progress=False)
    assert report.failed == 1 and gateway.sent == []
    assert "not a readable image" in last_entries(tmp_path / "out" / "results.jsonl")["broken.png"]["error"]


# ----------------------------------------------------------------------------- resume and Ctrl-C


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_resume_after_a_kill_loses_no_image(gateway, tmp_path, kill):
    """Killed halfway, then run again: every image is done once. SIGTERM lets the /run requests on
    their way be answered and recorded, so nothing is sent twice; SIGKILL can catch a /run on its
    way, whose job id is then never recorded — at most one per job slot is sent again."""
    gateway.min_run_s.update({"cpu-ep": 0.3, "gpu-ep": 0.3})
    gateway.workers.update({"cpu-ep": 4, "gpu-ep": 4})
    items = photos(tmp_path / "in", 24)
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "--out", str(out), "--endpoint", "auto", "--concurrency", "4",
            "--routing-policy", str(write_policy(tmp_path, gateway))]
    first = cli_process(args)
    try:
        def halfway() -> bool:
            if not (out / "results.jsonl").is_file():
                return False
            last = last_entries(out / "results.jsonl").values()
            return sum(e.get("status") is None for e in last) >= 12 and any(e.get("status") == "submitted" for e in last)
        wait_for(halfway, 60, "half the images done with jobs still in flight")
        first.send_signal(kill)
        _, stderr = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == (143 if kill == signal.SIGTERM else -9), stderr
    pending = [e for e in last_entries(out / "results.jsonl").values() if e.get("status") == "submitted"]
    assert pending

    second = cli_process(args)
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    assert f"{len(pending)} collected from an earlier run" in stdout
    entries = last_entries(out / "results.jsonl")
    assert all(entries[item.output]["error"] is None and entries[item.output].get("status") is None for item in items)
    assert all(read_png(out / item.output)["caption"] for item in items)        # lost: 0
    for entry in pending:                                                       # polled again by id
        assert entries[entry["output"]]["job"]["id"] == entry["job"]["id"]
    twice = sum(1 for n in gateway.images_sent().values() if n > 1)
    assert len(gateway.images_sent()) == 24
    if kill == signal.SIGTERM:
        assert twice == 0 and len(gateway.sent) == 24                          # done twice: 0
    else:
        assert twice <= 4


def test_ctrl_c_cancels_every_job_in_flight(gateway, tmp_path):
    gateway.held.add("slow-ep")  # jobs there never finish
    photos(tmp_path / "in", 6)
    out = tmp_path / "out"
    run = cli_process([str(tmp_path / "in"), "--out", str(out), "--endpoint", "gpu", "--concurrency", "3",
                       "--routing-policy", str(write_policy(tmp_path, gateway, gpu_id="slow-ep"))])
    try:
        wait_for(lambda: len(gateway.held_jobs) == 3, 60, "three jobs in flight")
        time.sleep(0.3)                      # polling them
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr
    assert sorted(gateway.cancelled) == sorted(gateway.held_jobs) == ["held-1", "held-2", "held-3"]
    assert all(status == "CANCELLED" for status in gateway.held_jobs.values())
    cancelled = [e for e in last_entries(out / "results.jsonl").values() if e["error"] == CANCELLED]
    assert sorted(e["job"]["id"] for e in cancelled) == ["held-1", "held-2", "held-3"]
    assert len(gateway.sent) == 3                                               # nothing sent after Ctrl-C
