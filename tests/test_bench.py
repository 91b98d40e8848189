"""The benchmark's machinery on tiny models: the table and JSON it prints, cost arithmetic, memory
sampling, and the switch for llama.cpp's weight repacking. (Its figures come from real-shape models;
see devtools/bench/pipeline.py.)"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from devtools.bench import pipeline as bench
from devtools.synthetic.ben2_cost import build_ben2_cost
from devtools.synthetic.florence2 import build_florence2
from devtools.synthetic.image_guard import build_image_guard
from devtools.synthetic.llama_guard import build_llama_guard


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {
        "ben2": str(build_ben2_cost(root / "ben2.onnx", shape="tiny")),
        "florence2": str(build_florence2(root / "florence2")),
        "llama_guard": str(build_llama_guard(root / "tiny.gguf", shape="small")),
        "image_guard": str(build_image_guard(root / "image_guard")),
    }


def test_bench_json_on_tiny_models(tiny, tmp_path, capsys):
    code = bench.main([
        "--ben2", tiny["ben2"], "--florence2", tiny["florence2"], "--guard", tiny["llama_guard"],
        "--image-guard", tiny["image_guard"], "--device", "cpu", "--runs", "2", "--warmup", "1", "--caption-tokens", "4", "--num-beams", "1",
        "--price", "cpu-2vcpu=0.5", "--price", "mine=2", "--cache", str(tmp_path), "--json",
    ])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    cpu = doc["results"]["cpu"]
    assert cpu["devices"] == {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0}
    for stage in ("cutout", "image_check", "caption", "safety_check", "total"):
        runs = cpu["stages"][stage]["runs_s"]
        assert len(runs) == 2 and cpu["stages"][stage]["median_s"] == pytest.approx(float(np.median(runs)))
        assert cpu["stages"][stage]["peak_mib"] > 0
    for i in range(2):  # the total of an image covers its four stages
        assert cpu["stages"]["total"]["runs_s"][i] >= sum(cpu["stages"][s]["runs_s"][i] for s in ("cutout", "image_check", "caption", "safety_check"))
    assert set(cpu["load"]) == {"ben2", "image_guard", "florence2", "llama_guard"}
    assert cpu["peak_rss_mib"] >= max(cpu["stages"][s]["peak_mib"] for s in cpu["stages"]) * 0.99
    assert cpu["prompt_tokens"] > 10  # the fixed caption and the template's closing part
    costs = {row["price"]: row for row in doc["costs"]}
    assert costs["cpu-2vcpu"]["usd_per_image"] == pytest.approx(0.5 * cpu["stages"]["total"]["median_s"])
    assert costs["rtx4090"]["device"] == "cuda" and costs["mine"]["device"] == "cuda"
    if "cuda" not in doc["results"]:
        assert costs["rtx4090"]["usd_per_image"] is None
    assert not list(tmp_path.iterdir())  # given paths: nothing built


def test_table_has_the_published_rows():
    stage = lambda s: {"median_s": s, "runs_s": [s], "peak_mib": 100.0}  # noqa: E731
    result = {
        "device": "cpu", "threads": 2, "peak_rss_mib": 3072.0, "cold_load_s": 12.0,
        "load": {"ben2": {"seconds": 1.0, "peak_mib": 10.0}},
        "stages": {"cutout": stage(10.0), "caption": stage(3.0), "safety_check": stage(1.0), "total": stage(14.5)},
    }
    doc = {"results": {"cpu": result}, "skipped": {"cuda": "no GPU"}, "costs": bench.cost_rows({"cpu": result}, {"cpu-2vcpu": 0.0000233, "rtx3070": 0.0003})}
    table = bench.format_table(doc)
    for label, value in (("BEN2 background removal", "10.00"), ("Florence-2 caption", "3.00"), ("Llama safety check", "1.00"), ("Total per image", "14.50"), ("Peak RSS, GiB", "3.00")):
        assert any(line.startswith(f"| {label}") and value in line for line in table.splitlines()), label
    assert "CUDA: not measured — no GPU" in table
    assert any(line.startswith("| Image guard (NSFW) check") and "-" in line for line in table.splitlines())  # not run: a dash
    assert f"{14.5 * 0.0000233:.6f}" in table and "| rtx3070 (cuda) | 0.0003000 | not measured |" in table


def test_parse_prices_overrides_and_adds():
    prices = bench.parse_prices(["cpu-2vcpu=0.001", "a100=0.0008"])
    assert prices["cpu-2vcpu"] == 0.001 and prices["a100"] == 0.0008 and prices["rtx4090"] == 0.0005
    with pytest.raises(SystemExit):
        bench.parse_prices(["nonsense"])


def test_rss_sampler_sees_a_short_allocation():
    sampler = bench.RssSampler(interval=0.002)
    try:
        with sampler.window() as quiet:
            pass
        with sampler.window() as busy:
            block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
            import time

            time.sleep(0.05)
            del block
    finally:
        sampler.close()
    assert busy["peak_mib"] - quiet["peak_mib"] > 200


def test_repack_child_reports_the_copy_llama_cpp_made(tmp_path):
    """The child reads llama.cpp's own log: repacking off makes no repacked copy; on makes one where
    llama.cpp repacks by default (AVX2), the same size as a plain load's."""
    import llama_cpp

    from devtools.bench.common import llama_log, repacked_mib

    q4_0 = build_llama_guard(tmp_path / "q4_0.gguf", shape="tiny", quantize="Q4_0")
    with llama_log() as lines:
        llama_cpp.Llama(model_path=str(q4_0), n_ctx=512, verbose=False).close()
    default = repacked_mib(lines)
    results = {flag: bench.child_repack({"path": str(q4_0), "repack": flag, "runs": 1, "warmup": 0, "threads": 1}) for flag in (True, False)}
    assert results[False]["repacked_mib"] == 0
    assert results[True]["repacked_mib"] == default
    if " avx2" in open("/proc/cpuinfo").read():
        assert default > 0


def test_repack_speed_child_alternates(tiny):
    speed = bench.child_repack_speed({"path": tiny["llama_guard"], "runs": 2, "warmup": 0, "threads": 1})
    assert len(speed["on_runs_s"]) == len(speed["off_runs_s"]) == 2
    assert speed["off_over_on"] == pytest.approx(speed["off_median_s"] / speed["on_median_s"])


def test_bench_is_reachable_from_the_command_line():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "cutout_guard", "bench", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--guard" in done.stdout and "--repack" in done.stdout
