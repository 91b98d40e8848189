"""`cutout-guard plan`: the queue simulation against small cases computed by hand."""

from __future__ import annotations

import json

import pytest

from cutout_guard.router.errors import PolicyError
from cutout_guard.router.plan import (
    DEFAULT_DATE, EndpointModel, always, arrival_times, bench_times, make_plan, parse_profile, plan_main, policy_route, simulate,
    suggested_max_queue, switch_rate,
)
from cutout_guard.router.policy import Request, load_policy, parse_policy
from cutout_guard.router.stats import percentile


def model(name="cpu", *, seconds=10.0, cold=5.0, price=1.0, workers=1, idle=0.0) -> EndpointModel:
    return EndpointModel(name, seconds=seconds, cold_start_s=cold, price_per_second=price, workers=workers,
                         idle_timeout_s=idle)


def one(arrivals, **options):
    return simulate(arrivals, {"cpu": model(**options)}, always("cpu"), routing="cpu")


# ----------------------------------------------------------------------------- hand-computed cases


def test_every_job_after_an_idle_stop_starts_cold():
    # 10 s per image, 5 s cold start, no idle timeout: both jobs pay a cold start, each worker 15 s
    run = one([0.0, 100.0])
    assert run.latencies_s == [15.0, 15.0]
    assert run.billed_s == {"cpu": 30.0} and run.cost_usd == 30.0 and run.cold_starts == 2


def test_a_second_job_waits_for_the_only_worker():
    # job 2 arrives at 1 s while job 1 runs 5–15 s: it runs 15–25 s, 24 s after it arrived
    run = one([0.0, 1.0])
    assert run.latencies_s == [15.0, 24.0]
    assert run.billed_s == {"cpu": 25.0} and run.cold_starts == 1
    assert run.max_queue == {"cpu": 2}     # at 1 s job 1 still waits for the cold start, and job 2 for job 1


def test_a_second_worker_starts_when_that_is_sooner():
    # with two workers, job 2 gets its own (cold: ready at 6 s, done at 16 s)
    run = one([0.0, 1.0], workers=2)
    assert run.latencies_s == [15.0, 15.0]
    assert run.billed_s == {"cpu": 30.0} and run.cold_starts == 2
    # but not when a busy worker frees first: cold start 10 s, job 1 runs 10–20 s, job 2 at 21 s
    # takes the warm worker (21–31 s); job 3 at 22 s would wait for a new worker until 32 s, so
    # it waits for the warm one instead (31–41 s)
    run = one([0.0, 21.0, 22.0], workers=2, cold=10.0, idle=100.0)
    assert run.latencies_s == [20.0, 10.0, 19.0] and run.cold_starts == 1


def test_an_idle_worker_stays_warm_for_the_idle_timeout_and_is_billed_for_it():
    # idle timeout 10 s: job 1 ends at 15 s, job 2 at 20 s finds the worker warm (20–30 s);
    # billed from 0 s to 30 s + 10 s idle = 40 s
    run = one([0.0, 20.0], idle=10.0)
    assert run.latencies_s == [15.0, 10.0]
    assert run.billed_s == {"cpu": 40.0} and run.cold_starts == 1
    # job 2 at 40 s: the worker stopped at 25 s (billed 25 s), a new one runs 40–55 s + 10 s idle
    run = one([0.0, 40.0], idle=10.0)
    assert run.latencies_s == [15.0, 15.0]
    assert run.billed_s == {"cpu": 50.0} and run.cold_starts == 2


def test_the_policy_overflows_when_the_cpu_queue_is_over_its_limit():
    policy = parse_policy('[[rules]]\nname = "batch"\nwhen = { kind = "batch" }\nuse = "cpu"\nmax_queue = 0\n')
    models = {"cpu": model(cold=0.0), "gpu": model("gpu", seconds=2.0, cold=0.0, price=3.0)}
    route = policy_route(policy, Request(None, kind="batch"), DEFAULT_DATE)
    run = simulate([0.0, 1.0, 2.0], models, route, routing="policy")
    # job 1: CPU 0–10 s; job 2 at 1 s: CPU queue 0 ≤ 0, CPU 10–20 s; job 3 at 2 s: CPU queue 1 > 0 → GPU 2–4 s
    assert run.images == {"cpu": 2, "gpu": 1}
    assert run.latencies_s == [10.0, 19.0, 2.0]
    assert run.billed_s == {"cpu": 20.0, "gpu": 2.0} and run.cost_usd == 20.0 + 2.0 * 3.0


def test_off_peak_rules_see_the_arrivals_local_time():
    rules = 'default = "gpu"\n[[rules]]\nname = "night"\nwhen = { off_peak = true }\nuse = "cpu"\n'
    utc = policy_route(parse_policy(rules), Request(None), DEFAULT_DATE)   # the default window, 22:00-07:00 UTC
    assert [utc(h * 3600, {}) for h in (6.9, 7.1, 21.9, 22.5)] == ["cpu", "gpu", "gpu", "cpu"]
    # hour 0 is midnight where the policy's windows are: 06:54 in Berlin is still off-peak there
    berlin = parse_policy(rules + '[off_peak]\ntimezone = "Europe/Berlin"\nwindows = ["22:00-07:00"]\n')
    local = policy_route(berlin, Request(None), DEFAULT_DATE)
    assert [local(h * 3600, {}) for h in (6.9, 7.1, 21.9, 22.5)] == ["cpu", "gpu", "gpu", "cpu"]


# ----------------------------------------------------------------------------- arrivals


def test_arrivals_are_seeded_and_follow_the_profile():
    profile = [0.0] * 24
    profile[3] = 120.0
    a = arrival_times(profile, seed=7)
    assert a == arrival_times(profile, seed=7) and a != arrival_times(profile, seed=8)
    assert all(3 * 3600 <= t < 4 * 3600 for t in a)
    assert 120 - 5 * 11 < len(a) < 120 + 5 * 11                       # Poisson: mean 120, sd ≈ 11
    even = arrival_times([4.0] * 24, kind="even")
    assert even[:5] == [0.0, 900.0, 1800.0, 2700.0, 3600.0] and len(even) == 96
    assert arrival_times([0.5] * 24, kind="even") == [h * 7200.0 for h in range(12)]   # one every other hour


def test_profile_parsing(tmp_path):
    assert parse_profile("50") == [50.0] * 24
    assert parse_profile(",".join(["0"] * 12 + ["10"] * 12))[12] == 10.0
    (tmp_path / "p.json").write_text(json.dumps(list(range(24))))
    assert parse_profile(f"@{tmp_path / 'p.json'}")[23] == 23.0
    with pytest.raises(PolicyError, match="expected 1 or 24 rates"):
        parse_profile("1,2,3")
    with pytest.raises(PolicyError, match="give one rate"):
        parse_profile("lots")


# ----------------------------------------------------------------------------- the switch volume


def test_switch_volume_with_even_arrivals_is_the_cpu_capacity():
    # one worker, 10 s per image, no cold start: evenly spaced images keep up exactly until one
    # arrives every 10 s (360 an hour); past that the queue grows all day and p95 explodes
    models = {"cpu": model(cold=0.0, idle=3600.0), "gpu": model("gpu", seconds=1.0)}
    rate = switch_rate(models, target_s=60.0, kind="even")
    assert 360.0 <= rate < 362.0
    # a target below the time of one image cannot be met at all
    assert switch_rate(models, target_s=5.0, kind="even") is None


def test_suggested_max_queue():
    # 3 workers at 30 s: the n-th queued image waits about n × 10 s, plus its own 30 s
    assert suggested_max_queue(model(seconds=30.0, workers=3), 600.0) == 57
    assert suggested_max_queue(model(seconds=30.0, workers=3), 10.0) == 0


def test_percentile_is_nearest_rank():
    assert percentile([4, 1, 3, 2], 50) == 2 and percentile(list(range(1, 21)), 95) == 19
    assert percentile([], 50) is None and percentile([7], 99) == 7


# ----------------------------------------------------------------------------- the command


def bench_doc(cpu_s: float, cpu_cold: float) -> dict:
    """The part of `cutout-guard bench --json` the planner reads (results.<device>)."""
    return {"results": {"cpu": {"stages": {"total": {"median_s": cpu_s}}, "cold_load_s": cpu_cold}}}


def test_plan_command_reads_the_bench_and_prices(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_doc(20.0, 4.0)))
    assert bench_times(bench) == {"cpu": {"seconds": 20.0, "cold_start_s": 4.0}}
    # one image every 2 hours, evenly: every image starts a cold worker and nothing overlaps,
    # so CPU billing per image is 4 + 20 + 5 (idle) s, GPU 1 + 5 + 5 s
    argv = ["--bench", str(bench), "--seconds", "gpu=5", "--cold-start", "gpu=1", "--price", "cpu=0.001",
            "--price", "gpu=0.01", "--profile", "0.5", "--arrivals", "even", "--json"]
    assert plan_main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    cpu, gpu, policy = doc["runs"]
    assert cpu["images"] == gpu["images"] == policy["images"] == 12
    assert cpu["cost_per_image_usd"] == pytest.approx(29 * 0.001)
    assert gpu["cost_per_image_usd"] == pytest.approx(11 * 0.01)
    assert cpu["latency_s"] == {"p50": 24.0, "p95": 24.0, "p99": 24.0}
    assert gpu["latency_s"]["p95"] == 6.0
    assert policy["share_on_gpu"] == 0.0          # the default policy sends batch work to the CPU
    assert policy["cost_per_day_usd"] == pytest.approx(cpu["cost_per_day_usd"])
    assert doc["switch"]["cpu_capacity_per_hour"] == pytest.approx(3 * 3600 / 20)

    assert plan_main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "| CPU only " in text and "| GPU only " in text and "| policy " in text
    assert "the GPU costs 3.8× the CPU per image; the CPU takes 4.0× as long" in text
    from cutout_guard.app import cli

    assert cli.main(["plan", *argv]) == 0                          # the same through `cutout-guard plan`
    assert json.loads(capsys.readouterr().out) == doc


def test_plan_names_what_is_missing(tmp_path, capsys):
    assert plan_main(["--seconds", "cpu=10", "--price", "cpu=0.1", "--price", "gpu=1"]) == 2
    assert "no seconds per image for the gpu endpoint — pass --bench FILE" in capsys.readouterr().err
    assert plan_main(["--seconds", "cpu=10", "--seconds", "gpu=2"]) == 2
    assert "no price for the cpu endpoint" in capsys.readouterr().err
    (tmp_path / "b.json").write_text("{}")
    assert plan_main(["--bench", str(tmp_path / "b.json")]) == 2
    assert "not a `cutout-guard bench --json` document" in capsys.readouterr().err


def test_make_plan_is_deterministic():
    models = {"cpu": model(seconds=27.0, cold=16.0, price=0.0000233, workers=3, idle=5.0),
              "gpu": model("gpu", seconds=6.0, cold=10.0, price=0.0005, workers=3, idle=5.0)}
    a = make_plan(load_policy(), models, [380.0] * 24, seed=3)
    assert a == make_plan(load_policy(), models, [380.0] * 24, seed=3)
    cpu, gpu, policy = a["runs"]
    assert 0 < policy["share_on_gpu"] < 1          # 380/h is near the CPU's 400/h: some overflow
    assert cpu["latency_s"]["p95"] > policy["latency_s"]["p95"]
