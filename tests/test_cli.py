"""The ``cutout-guard`` command line on tiny models built here: reports, results.jsonl, bad files,
resuming, exit codes, the device presets and ``download`` against a local hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_guard.app import cli

from cutout_guard.core import report
from cutout_guard.core.errors import BadInput
from cutout_guard.core.imagefile import read_image
from cutout_guard.engines.ben2 import Ben2
from cutout_guard.engines.florence2 import Florence2
from cutout_guard.engines.image_guard import ImageGuard
from cutout_guard.engines.llama_guard import LlamaGuard
from cutout_guard.app.pipeline import Devices, devices_for
from devtools.synthetic.ben2 import build_ben2
from devtools.synthetic.florence2 import build_florence2
from devtools.synthetic.image_guard import build_image_guard
from devtools.synthetic.llama_guard import build_llama_guard

REPO = Path(__file__).resolve().parent.parent
TINY = ["--ben2", "tiny.onnx", "--florence2", "tiny", "--llama-guard", "tiny.gguf", "--image-guard", "red", "--max-new-tokens", "8", "--offline"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder in the real layout (ben2/, florence2/, LLM/, image_guard/) holding tiny models
    (the image guard is the rigged one: unsafe iff the image is mostly red)."""
    root = tmp_path_factory.mktemp("models")
    build_ben2(root / "ben2" / "tiny.onnx", size=64)
    build_florence2(root / "florence2" / "tiny")
    build_florence2(root / "florence2" / "tiny-v5", layout="transformers5")  # same weights, transformers-5 layout
    build_llama_guard(root / "LLM" / "tiny.gguf", weights="trigger")
    build_image_guard(root / "image_guard" / "red", weights="red")
    return root


def photo(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def mixed(tmp_path):
    """Two good images (one in a sub-folder), a corrupt JPEG, a truncated PNG, text named .png, a non-image file."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    photo(1).save(folder / "good.png")
    photo(2).save(folder / "sub" / "good2.jpg", quality=90)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    whole = (tmp_path / "whole.png")
    photo(3, (200, 200)).save(whole)
    (folder / "truncated.png").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (folder / "fake.png").write_text("this is not a picture")
    (folder / "notes.txt").write_text("not an image, not even by name")
    return folder


def run(models, *args) -> int:
    return cli.main(["run", *map(str, args), "--models-dir", str(models), *TINY])


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_mixed_folder_records_failures_and_exits_1(models, mixed, tmp_path):
    out = tmp_path / "out"
    assert run(models, mixed, "--out", out) == 1
    lines = {entry["output"]: entry for entry in results(out)}
    assert sorted(lines) == ["corrupt.png", "fake.png", "good.png", "sub/good2.png", "truncated.png"]  # notes.txt passed over
    for name in ("good.png", "sub/good2.png"):
        entry = lines[name]
        assert entry["error"] is None
        assert entry["verdict"] in ("safe", "unsafe") and isinstance(entry["caption"], str) and entry["caption"]
        assert 0.0 <= entry["text"]["p_unsafe"] <= 1.0 and 0.0 <= entry["image"]["p_unsafe"] <= 1.0
        assert entry["image"]["model"] == "red" and entry["text"]["model"] == "tiny.gguf"
        assert set(entry["seconds"]) == {"cutout", "image_check", "caption", "safety_check", "total"}
        # the total is the stages' sum (each value rounded to 0.1 ms in the report)
        assert entry["seconds"]["total"] == pytest.approx(sum(v for k, v in entry["seconds"].items() if k != "total"), abs=5e-4)
        assert (out / name).is_file() and (out / name).with_suffix(".json").is_file()
    assert "not an image" in lines["fake.png"]["error"]
    assert "damaged" in lines["truncated.png"]["error"] and "truncated" in lines["truncated.png"]["error"]
    assert lines["corrupt.png"]["error"]
    for name in ("corrupt.png", "fake.png", "truncated.png"):
        assert lines[name]["caption"] is None and lines[name]["verdict"] is None
        assert not (out / name).exists()


def test_report_png_matches_the_engines_run_on_the_cutout(models, tmp_path):
    """The PNG is the RGBA cutout; the caption is of the cutout on white; the verdict is of that caption."""
    source = tmp_path / "one.png"
    photo(5, (56, 44)).save(source)
    out = tmp_path / "out"
    assert run(models, source, "--out", out, "--threshold", "0.4") == 0
    png = out / "one.png"
    got = report.read_png(png)
    assert got == json.loads(png.with_suffix(".json").read_text())
    entry = results(out)[0]
    assert got["caption"] == entry["caption"] and got["text"] == entry["text"] and got["image"] == entry["image"]
    assert got["text"]["threshold"] == 0.4 and got["task"] == "<CAPTION>" and got["unsafe_action"] == "blur"
    assert got["image"]["threshold"] == 0.5 and got["schema"] == 2
    assert got["models"] == {"ben2": "tiny.onnx", "florence2": "tiny", "llama_guard": "tiny.gguf", "image_guard": "red"}
    assert got["devices"] == {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0}

    rgb = np.asarray(Image.open(source), dtype=np.float32) / 255.0
    ben2 = Ben2.load(models / "ben2" / "tiny.onnx")
    alpha = ben2.matte(rgb)
    with Image.open(png) as image:
        assert image.mode == "RGBA" and image.size == (56, 44)
        saved = np.asarray(image, dtype=np.float32) / 255.0
    np.testing.assert_allclose(saved[..., 3], alpha, atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(saved[..., :3], rgb, atol=1 / 255 + 1e-6)

    # what is captioned is what the PNG shows: its 8-bit cutout, composited on white here
    on_white = saved[..., :3] * saved[..., 3:] + (1.0 - saved[..., 3:])
    florence = Florence2.load(models / "florence2" / "tiny")
    try:
        assert got["caption"] == florence.caption(on_white, max_new_tokens=8)
    finally:
        florence.close()
    guard = LlamaGuard.load(models / "LLM" / "tiny.gguf")
    try:
        verdict = guard.check(got["caption"], threshold=0.4)
    finally:
        guard.close()
    assert got["text"]["safe"] == verdict.safe and got["text"]["p_unsafe"] == pytest.approx(verdict.p_unsafe)
    image_verdict = ImageGuard.load(models / "image_guard" / "red").check(on_white)  # the same view as the caption
    assert got["image"]["safe"] == image_verdict.safe and got["image"]["p_unsafe"] == pytest.approx(image_verdict.p_unsafe)
    assert got["safe"] == (verdict.safe and image_verdict.safe) is True  # kept unblurred, as checked above


def test_resume_skips_successes_and_retries_failures(models, mixed, tmp_path):
    out = tmp_path / "out"
    assert run(models, mixed, "--out", out) == 1
    first = results(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert run(models, mixed, "--out", out) == 1  # the bad files fail again
    second = results(out)[len(first):]
    assert sorted(e["output"] for e in second) == ["corrupt.png", "fake.png", "truncated.png"]
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    for name in ("corrupt.jpg", "fake.png", "truncated.png"):
        (mixed / name).unlink()
    photo(9).save(mixed / "late.png")
    assert run(models, mixed, "--out", out) == 0  # only the new image runs
    third = results(out)[len(first) + len(second):]
    assert [e["output"] for e in third] == ["late.png"] and third[0]["error"] is None
    assert run(models, mixed, "--out", out) == 0
    assert len(results(out)) == len(first) + len(second) + 1


def test_models_load_once_per_run(models, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(3):
        photo(seed).save(folder / f"{seed}.png")
    calls = []
    for engine in (Ben2, Florence2, LlamaGuard, ImageGuard):
        original = engine.load.__func__
        monkeypatch.setattr(engine, "load", classmethod(lambda cls, *a, _o=original, **k: calls.append(cls.__name__) or _o(cls, *a, **k)))
    assert run(models, folder, "--out", tmp_path / "out") == 0
    assert sorted(calls) == ["Ben2", "Florence2", "ImageGuard", "LlamaGuard"]
    assert len(results(tmp_path / "out")) == 3


def test_unsafe_action_withhold_writes_a_transparent_png(models, tmp_path):
    source = tmp_path / "x.png"
    photo(4).save(source)
    out = tmp_path / "out"
    # threshold 0: every p_unsafe reaches it, so the verdict is unsafe
    assert run(models, source, "--out", out, "--threshold", "0", "--unsafe-action", "withhold") == 0
    got = report.read_png(out / "x.png")
    assert got["safe"] is False and got["unsafe_action"] == "withhold"
    assert results(out)[0]["verdict"] == "unsafe"
    with Image.open(out / "x.png") as image:
        assert image.mode == "RGBA" and image.size == (48, 40)
        assert not np.asarray(image).any()


def test_a_red_image_is_unsafe_by_the_image_check_alone(models, tmp_path):
    """The caption's check says safe (no trigger word); the rigged image guard sees red: blurred, unsafe."""
    source = tmp_path / "red.png"
    Image.new("RGB", (40, 32), (230, 10, 10)).save(source)
    out = tmp_path / "out"
    assert run(models, source, "--out", out) == 0
    got = report.read_png(out / "red.png")
    assert got["image"]["safe"] is False and got["image"]["label"] == "nsfw" and got["safe"] is False
    assert results(out)[0]["verdict"] == "unsafe"


def test_no_image_check_skips_it_and_leaves_it_null(models, tmp_path, monkeypatch):
    source = tmp_path / "red.png"
    Image.new("RGB", (40, 32), (230, 10, 10)).save(source)
    monkeypatch.setattr(ImageGuard, "load", classmethod(lambda cls, *a, **k: pytest.fail("the image guard was loaded")))
    out = tmp_path / "out"
    assert run(models, source, "--out", out, "--no-image-check") == 0
    got = report.read_png(out / "red.png")
    assert got["image"] is None and got["models"]["image_guard"] is None and "image_check" not in got["seconds"]
    assert got["safe"] == got["text"]["safe"] and results(out)[0]["image"] is None


def test_an_empty_caption_is_unsafe(models, tmp_path, monkeypatch):
    """Regression: an empty caption was judged safe and the photo published unblurred."""
    monkeypatch.setattr(Florence2, "caption", lambda self, *a, **k: "")
    source = tmp_path / "a.png"
    photo(7).save(source)
    out = tmp_path / "out"
    assert run(models, source, "--out", out, "--unsafe-action", "withhold") == 0
    got = report.read_png(out / "a.png")
    assert got["caption"] == "" and got["text"]["safe"] is False and "empty" in got["text"]["reason"]
    assert got["safe"] is False and results(out)[0]["verdict"] == "unsafe"
    with Image.open(out / "a.png") as image:
        assert not np.asarray(image).any()  # withheld


def test_image_over_the_pixel_limit_is_a_recorded_error(models, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo(1).save(folder / "small.png")
    Image.new("L", (1100, 1000)).save(folder / "big.png")
    out = tmp_path / "out"
    assert run(models, folder, "--out", out, "--max-pixels", "1000000") == 1
    lines = {e["output"]: e for e in results(out)}
    assert lines["small.png"]["error"] is None
    assert "too large" in lines["big.png"]["error"] and "1,000,000" in lines["big.png"]["error"]


def test_read_image_names_only_the_packs_limit_whatever_pillows_is(tmp_path):
    """Above twice the limit Pillow raised its own DecompressionBombError at open, with its own numbers."""
    path = tmp_path / "bomb.png"
    Image.new("1", (3000, 3000)).save(path)
    for limit in (1_000_000, 4_000_000):
        with pytest.raises(BadInput, match=f"too large.*the limit is {limit:,} pixels \\(--max-pixels\\)"):
            read_image(path, max_pixels=limit)
    assert read_image(path, max_pixels=9_000_000).shape == (3000, 3000, 3)
    assert Image.MAX_IMAGE_PIXELS not in (1_000_000, 4_000_000, 9_000_000)  # restored


def test_empty_input_exits_2_without_loading_models(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    code = cli.main(["run", str(empty), "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "none")])
    assert code == 2
    assert "no images found" in caplog.text
    assert cli.main(["run", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_missing_model_exits_2_with_the_fix(tmp_path, caplog):
    photo(1).save(tmp_path / "a.png")
    code = cli.main(["run", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "none"), "--offline"])
    assert code == 2
    err = caplog.text
    assert "BEN2_Base.onnx" in err and "cutout-guard download ben2" in err


def test_cuda_preset_on_a_cpu_only_machine_is_a_clear_error(models, tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    photo(1).save(tmp_path / "a.png")
    assert run(models, tmp_path / "a.png", "--out", tmp_path / "out", "--preset", "cuda") == 2
    assert "CUDA" in caplog.text


def test_presets_and_overrides():
    assert devices_for("cpu") == Devices(provider="CPU", precision="fp32", n_gpu_layers=0, device="cpu")
    assert devices_for("cuda") == Devices(provider="CUDA", precision="fp16", n_gpu_layers=-1, device="cuda")
    assert devices_for("cuda", provider="CPU", n_gpu_layers=10, precision="bf16") == Devices("CPU", "bf16", 10, "cuda")
    assert devices_for("cpu", n_gpu_layers=0).n_gpu_layers == 0
    args = cli.build_parser().parse_args(["run", "x", "--out", "o", "--preset", "cuda", "--n-gpu-layers", "0"])
    assert (args.preset, args.n_gpu_layers, args.provider, args.precision) == ("cuda", 0, None, None)


def test_old_flag_names_still_work():
    """--device and --categories were the names of --preset and --policy; commands written then still run."""
    old = cli.build_parser().parse_args(["run", "x", "--out", "o", "--device", "cuda", "--categories", "S1,S10"])
    new = cli.build_parser().parse_args(["run", "x", "--out", "o", "--preset", "cuda", "--policy", "S1,S10"])
    assert (old.preset, old.policy) == (new.preset, new.policy) == ("cuda", "S1,S10")


def test_mask_values_flag_reaches_ben2(models, tmp_path, monkeypatch):
    from cutout_guard.engines.ben2 import Ben2

    seen = []
    real = Ben2.matte
    monkeypatch.setattr(Ben2, "matte", lambda self, rgb, **kw: seen.append(kw) or real(self, rgb, **kw))
    photo(1).save(tmp_path / "a.png")
    assert run(models, tmp_path / "a.png", "--out", tmp_path / "out", "--mask-values", "raw") == 0
    assert seen == [{"mask_values": "raw"}]


def test_collect_inputs_names_outputs_uniquely(tmp_path):
    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for name in ("x.png", "x.jpg", "a/x.png", ".hidden/y.png", "y.webp"):
        (folder / name).write_bytes(b"")
    out = folder / "out"  # an output folder inside the input folder is passed over
    out.mkdir()
    (out / "x.png").write_bytes(b"")
    items, problems = cli.collect_inputs([str(folder), str(folder / "y.webp"), str(tmp_path / "nope")], out)
    assert [i.output for i in items] == ["a/x.png", "x.jpg.png", "x.png.png", "y.png"]
    assert problems == [f"{tmp_path / 'nope'}: no such file or folder"]


def test_load_done_uses_the_last_line_and_skips_damaged_ones(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(
        json.dumps({"output": "a.png", "error": "boom"}) + "\n"
        + json.dumps({"output": "a.png", "error": None}) + "\n"
        + json.dumps({"output": "b.png", "error": None}) + "\n"
        + json.dumps({"output": "b.png", "error": "failed later"}) + "\n"
        + '{"output": "c.png", "err'  # a line cut off by a crash
    )
    assert cli.load_done(path) == {"a.png"}


def test_a_submitted_job_is_not_done(tmp_path):
    """A job sent to an endpoint and not collected yet: neither done nor a failure to retry."""
    from cutout_guard.core.results import is_submitted, last_entries

    path = tmp_path / "results.jsonl"
    path.write_text(
        json.dumps({"output": "a.png", "status": "submitted", "job": {"id": "j1", "endpoint": "cpu"}}) + "\n"
        + json.dumps({"output": "b.png", "error": None}) + "\n"
        + json.dumps({"output": "b.png", "status": "submitted", "job": {"id": "j2", "endpoint": "gpu"}}) + "\n"
    )
    assert cli.load_done(path) == set()
    assert [name for name, entry in last_entries(path).items() if is_submitted(entry)] == ["a.png", "b.png"]


def test_download_fetches_into_the_models_folder_and_run_finds_it(hub, models, tmp_path):
    name = "Llama-Guard-3-1B.Q4_K_M.gguf"
    data = (models / "LLM" / "tiny.gguf").read_bytes()
    hub.add("QuantFactory/Llama-Guard-3-1B-GGUF", name, data)
    root = tmp_path / "models"
    assert cli.main(["download", "llama_guard", "--llama-guard", name, "--models-dir", str(root)]) == 0
    assert (root / "LLM" / name).read_bytes() == data
    assert (root / "LLM" / f"{name}.lock.json").is_file()
    # run takes the same folder: the downloaded model is found, nothing else is fetched
    for folder, sub in (("ben2", "tiny.onnx"), ("florence2", "tiny"), ("image_guard", "red")):
        target = root / folder / sub
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(models / folder / sub)
    photo(1).save(tmp_path / "a.png")
    requests = len(hub.state.requests)
    code = cli.main(
        ["run", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--models-dir", str(root),
         "--ben2", "tiny.onnx", "--florence2", "tiny", "--llama-guard", name, "--image-guard", "red", "--max-new-tokens", "8"]
    )
    assert code == 0 and len(hub.state.requests) == requests


def test_download_with_comfyui_uses_its_models_folder(hub, models, tmp_path):
    name = "Llama-Guard-3-1B.Q4_K_M.gguf"
    hub.add("QuantFactory/Llama-Guard-3-1B-GGUF", name, (models / "LLM" / "tiny.gguf").read_bytes())
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    assert cli.main(["download", "llama_guard", "--llama-guard", name, "--comfyui", str(comfy)]) == 0
    assert (comfy / "models" / "LLM" / name).is_file()
    assert cli.main(["download", "nonsense", "--comfyui", str(comfy)]) == 2
    assert cli.main(["download", "llama_guard", "--comfyui", str(tmp_path / "no-comfy")]) == 2


def test_download_failure_exits_1(hub, tmp_path, caplog):
    # nothing on the hub: the error names the fix, the exit status says it failed
    assert cli.main(["download", "llama_guard", "--llama-guard", "Llama-Guard-3-1B.Q4_K_M.gguf", "--models-dir", str(tmp_path)]) == 1
    assert "cutout-guard download llama_guard" in caplog.text


def test_console_script_and_module_entry():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cutout-guard"] == "cutout_guard.app.cli:main"
    done = subprocess.run([sys.executable, "-m", "cutout_guard", "--help"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0
    for command in ("run", "download", "bench", "submit"):
        assert command in done.stdout
    done = subprocess.run([sys.executable, "-m", "cutout_guard", "run", "--help"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and "--n-gpu-layers" in done.stdout and "--unsafe-action" in done.stdout


def test_submit_and_bench_are_handed_their_arguments(monkeypatch):
    router_cli = pytest.importorskip("cutout_guard.router.cli")
    from devtools.bench import pipeline as bench

    seen = []
    monkeypatch.setattr(router_cli, "submit_main", lambda argv: seen.append(("submit", argv)) or 7)
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(("bench", argv)) or 0)
    assert cli.main(["submit", "x.jpg", "--tier", "free"]) == 7
    assert cli.main(["-v", "bench", "--guard", "8b"]) == 0
    assert seen == [("submit", ["x.jpg", "--tier", "free"]), ("bench", ["--guard", "8b"])]


def test_a_file_name_that_is_not_utf8_is_recorded_with_replacements(models, tmp_path):
    """Regression: a name decoding to a lone surrogate ended the run with UnicodeEncodeError in results.jsonl."""
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # "caf\udce9.png"
    photo(1).save(folder / name)
    out = tmp_path / "out"
    assert run(models, folder, "--out", out) == 0
    (line,) = results(out)
    assert line["error"] is None and line["file"].endswith("caf\ufffd.png")
    assert line["replaced_text"] == {"file": ["U+DCE9"], "output": ["U+DCE9"]}
    assert report.read_png(out / name)["caption"] == line["caption"]


def test_a_florence2_folder_saved_by_transformers_5_gives_the_same_reports(models, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo(4).save(folder / "x.png")
    args = ["--models-dir", str(models), *TINY]
    assert cli.main(["run", str(folder), "--out", str(tmp_path / "v4"), *args]) == 0
    args[args.index("tiny")] = "tiny-v5"
    assert cli.main(["run", str(folder), "--out", str(tmp_path / "v5"), *args]) == 0
    v4, v5 = (report.read_png(tmp_path / out / "x.png") for out in ("v4", "v5"))
    assert v5["models"]["florence2"] == "tiny-v5"
    assert v5["caption"] == v4["caption"] and v5["safe"] == v4["safe"]


def _reports(out: Path) -> dict:
    """Each report without its timings, and its PNG's pixels, by output name."""
    found = {}
    for png in sorted(out.rglob("*.png")):
        record = report.read_png(png)
        record.pop("seconds")
        with Image.open(png) as image:
            found[png.relative_to(out).as_posix()] = (record, np.asarray(image).copy())
    return found


def test_stage_by_stage_holds_one_model_at_a_time_and_gives_the_same_reports(models, tmp_path, monkeypatch):
    """--load one (the default): each stage loads its model alone, once per chunk; the reports and
    results lines are those of --load all, failures included."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(3):
        photo(seed).save(folder / f"{seed}.png")
    red = np.zeros((40, 48, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(folder / "red.png")  # unsafe by the image check: blurred
    (folder / "broken.png").write_text("not a picture")
    loaded, alive = [], []
    for engine in (Ben2, Florence2, LlamaGuard, ImageGuard):
        load, close = engine.load.__func__, engine.close

        def counted_load(cls, *a, _load=load, **k):
            alive.append(cls.__name__)
            assert len(alive) == 1, f"{alive} loaded at once"
            loaded.append(cls.__name__)
            return _load(cls, *a, **k)

        def counted_close(self, _close=close):
            if type(self).__name__ in alive:
                alive.remove(type(self).__name__)
            return _close(self)

        monkeypatch.setattr(engine, "load", classmethod(counted_load))
        monkeypatch.setattr(engine, "close", counted_close)
    staged = tmp_path / "staged"
    assert run(models, folder, "--out", staged, "--chunk", "2") == 1
    assert loaded == ["Ben2", "ImageGuard", "Florence2", "LlamaGuard"] * 3  # 5 images in chunks of 2
    assert not (staged / ".stages").exists()
    monkeypatch.undo()

    together = tmp_path / "together"
    assert run(models, folder, "--out", together, "--load", "all") == 1
    assert _reports(staged).keys() == _reports(together).keys()
    for name, (record, pixels) in _reports(together).items():
        got_record, got_pixels = _reports(staged)[name]
        assert got_record == record and np.array_equal(got_pixels, pixels), name
    assert _reports(staged)["red.png"][0]["safe"] is False
    lines = {e["output"]: {k: v for k, v in e.items() if k != "seconds"} for e in results(staged)}
    assert lines == {e["output"]: {k: v for k, v in e.items() if k != "seconds"} for e in results(together)}
    assert "not an image" in lines["broken.png"]["error"]


def test_an_interrupted_stage_by_stage_run_resumes_from_its_chunk(models, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(4):
        photo(seed).save(folder / f"{seed}.png")
    out = tmp_path / "out"
    calls = {"n": 0}
    caption = Florence2.caption

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # the first image of the second chunk
            raise KeyboardInterrupt
        return caption(self, *a, **k)

    monkeypatch.setattr(Florence2, "caption", interrupted)
    assert run(models, folder, "--out", out, "--chunk", "2") == 130
    assert sorted(e["output"] for e in results(out)) == ["0.png", "1.png"]  # the first chunk is written
    assert not (out / ".stages").exists()
    monkeypatch.undo()
    assert run(models, folder, "--out", out, "--chunk", "2") == 0
    assert sorted(e["output"] for e in results(out)) == ["0.png", "1.png", "2.png", "3.png"]


def _touched(mib: int):
    """``mib`` MiB of fresh anonymous pages, every page written (a private mapping: never memory the
    allocator already holds from earlier tests, which would not raise the RSS)."""
    import mmap

    block = mmap.mmap(-1, mib * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_stage_peak_memory_is_read_per_stage():
    from cutout_guard.app import stages

    if not stages.reset_peak_memory():
        pytest.skip("this kernel cannot reset the peak RSS")
    before = stages.peak_memory()
    block = _touched(64)
    during = stages.peak_memory()
    block.close()
    assert during - before >= 60 * 2**20
    assert stages.reset_peak_memory() and stages.peak_memory() < during  # a new window starts below the old peak
    peaks = stages.StagePeaks()
    with peaks.around("big"):
        _touched(96).close()
    with peaks.around("small"):
        pass
    assert peaks.peaks["big"] - peaks.peaks["small"] >= 90 * 2**20
    assert peaks.summary().startswith("big ") and "MiB" in peaks.summary()
    # a peak outside every stage, before a reset, still counts for the whole run
    _touched(160).close()
    with peaks.around("after"):
        pass
    assert peaks.whole >= peaks.peaks["small"] + 150 * 2**20
    assert peaks.summary().endswith(f"whole run {peaks.whole / 2**20:.0f} MiB")


@pytest.mark.parametrize("load", ["one", "all"])
def test_the_run_logs_each_stages_peak_memory(models, tmp_path, caplog, load):
    photo(1).save(tmp_path / "a.png")
    with caplog.at_level("INFO"):
        assert run(models, tmp_path / "a.png", "--out", tmp_path / "out", "--load", load) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("peak memory by stage:"))
    for stage in ("cutout", "image_check", "caption", "safety_check"):
        assert f"{stage} " in line


def test_main_leaves_the_callers_logging_levels_as_they_were(tmp_path):
    """Regression: run in-process, main() set the engines' logger to WARNING for good, so a later
    test (in any order) that reads an engine's INFO line saw nothing."""
    import logging

    engines = logging.getLogger("cutout_guard.engines")
    package = logging.getLogger("cutout_guard")
    engines.setLevel(logging.DEBUG)
    package.setLevel(logging.NOTSET)
    try:
        cli.main(["run", str(tmp_path / "none"), "--out", str(tmp_path / "out")])  # exits 2: no such input
        assert engines.level == logging.DEBUG and package.level == logging.NOTSET
    finally:
        engines.setLevel(logging.NOTSET)
