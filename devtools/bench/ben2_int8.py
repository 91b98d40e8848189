"""BEN2 in int8 (static QDQ) against fp32 on this CPU: seconds per 1024² image, their ratio, and the
peak memory of quantizing.

Quantization (onnxruntime's ``quantize_static``, QDQ format): ``Conv``, ``MatMul`` and ``Gemm`` —
the products, most of BEN2's time — get int8 weights per output channel, 7-bit (``reduce_range``,
as onnxruntime advises for x86 CPUs without VNNI) and uint8 activations whose ranges come from
running the fp32 graph on the calibration photos, pre-processed as the pack's engine does.

Quantization runs in its own process (``quantize`` below, calibrated on
``--photos`` or on ``--calibration`` generated photos); then one fresh process loads both graphs
through the pack's BEN2 engine (its real session options, the same threads) and times them in
alternation (fp32, int8, fp32, int8, …) after a warm-up each, so drift in the machine's load hits
both alike. Random weights show speed only: the masks' agreement printed (mean absolute error,
IoU at 0.5) says nothing about fidelity, which only the real weights on real photos can show.

    python -m devtools.bench.ben2_int8 --model BEN2_Base.onnx [--int8 BEN2_Base.int8.onnx] [--photos DIR]
        [--calibration 4] [--runs 3] [--threads 2] [--ops Conv MatMul Gemm] [--exclude-attention]
        [--int8-optimization extended]
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

QUANTIZE = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
from devtools.bench.ben2_int8 import calibration_photos, quantize
from devtools.bench.common import peak_rss_mib
cfg = json.loads(sys.argv[1])
start = time.perf_counter()
quantize(cfg["model"], cfg["out"], calibration_photos(cfg["photos"], cfg["calibration"]), op_types=cfg["ops"],
         exclude=cfg["exclude"], per_channel=cfg["per_channel"], reduce_range=cfg["reduce_range"])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_mib": peak_rss_mib()}))
"""

TIME = r"""
import json, sys
from devtools.bench.ben2_int8 import time_pair
print(json.dumps(time_pair(**json.loads(sys.argv[1]))))
"""


QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def _quantization():
    import onnx
    from onnxruntime import quantization

    return onnx, quantization


def _graph_input(onnx, path: Path, default_size: int) -> tuple[str, int]:
    """The name and size of a BEN2 graph's one ``[1,3,S,S]`` image input; exits naming the problem otherwise."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    if len(dims) != 4 or dims[1] != 3 or len(model.graph.output) != 1:
        raise SystemExit(
            f"BEN2: {path} does not look like a BEN2 model (inputs {[i.name for i in inputs]}, "
            f"outputs {[o.name for o in model.graph.output]}; expected one [1,3,1024,1024] image input and "
            "one mask output) — give the fp32 BEN2_Base.onnx"
        )
    return inputs[0].name, dims[2] if dims[2] > 0 else default_size


def _reader(quantization, name: str, size: int, photos: Iterable[np.ndarray], counted: list[int]):
    """A calibration data reader feeding one pre-processed photo at a time (none held in memory)."""

    from cutout_guard.engines.ben2 import preprocess

    class Photos(quantization.CalibrationDataReader):
        def __init__(self):
            self.photos: Iterator[np.ndarray] = iter(photos)

        def get_next(self):
            rgb = next(self.photos, None)
            if rgb is None:
                return None
            counted[0] += 1
            log.info("calibrating on photo %d", counted[0])
            return {name: preprocess(rgb, size)}

    return Photos()


def calibrate(quantization, model: Path, tmp: Path, reader, ranges: Path, *, op_types: list[str], threads: int | None = None) -> None:
    """The activation ranges (min, max) of ``model``'s quantized ops over the reader's photos, saved to ``ranges``.

    onnxruntime's calibrator adds a ReduceMin/ReduceMax pair per tensor as extra graph outputs. In
    its default execution order those run after the whole graph, so every calibrated activation
    of a 1024² BEN2 run is held at once (over 20 GB); run in priority order, with the memory arena
    off, each pair runs as soon as its tensor exists and the run peaks near a plain inference.
    """
    import onnxruntime

    from cutout_guard.core.cpu import resolve_threads

    if "calibration_cache_path" not in inspect.signature(quantization.quantize_static).parameters:
        raise SystemExit(
            f"quantizing BEN2 needs a newer onnxruntime than {onnxruntime.__version__} (one whose quantize_static "
            "takes calibration_cache_path) — `pip install -U onnxruntime`"
        )
    from onnxruntime.quantization.calibrate import save_tensors_data

    augmented = tmp / "augmented.onnx"
    calibrator = quantization.create_calibrator(model, op_types, augmented_model_path=str(augmented),
                                                calibrate_method=quantization.CalibrationMethod.MinMax)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the calibrator runs it
    options.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.intra_op_num_threads = resolve_threads(threads)
    options.inter_op_num_threads = 1
    calibrator.infer_session = None  # the calibrator's own session (default order) goes before ours loads
    calibrator.infer_session = onnxruntime.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), ranges)


def quantize(model: str | Path, out: str | Path, photos: Iterable[np.ndarray], *, per_channel: bool = True,
             reduce_range: bool = True, op_types: Iterable[str] = QUANTIZED_OPS, exclude: Iterable[str] = ()) -> Path:
    """Write the int8 (static QDQ) copy of the fp32 BEN2 graph ``model`` to ``out``, calibrated on
    ``photos`` (``H×W×3`` float 0..1 RGB arrays, consumed one at a time). ``op_types``: the op
    types quantized; ``exclude``: node names left in fp32. Returns ``out``."""
    onnx, quantization = _quantization()
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise SystemExit(f"BEN2 model {model} does not exist — give the path of an fp32 BEN2 graph")
    if out.resolve() == model.resolve():
        raise SystemExit(f"--out {out} is the model itself — write the int8 copy to another file")
    from cutout_guard.engines.ben2 import INPUT_SIZE

    name, size = _graph_input(onnx, model, INPUT_SIZE)
    photos = iter(photos)
    first = next(photos, None)
    if first is None:
        raise SystemExit("no calibration photos — give at least one photo")
    photos = itertools.chain([first], photos)
    counted = [0]
    with tempfile.TemporaryDirectory(prefix="ben2-int8-") as tmp:
        staged, ranges = Path(tmp) / out.name, Path(tmp) / "ranges.json"
        calibrate(quantization, model, Path(tmp), _reader(quantization, name, size, photos, counted), ranges,
                  op_types=list(op_types))
        quantization.quantize_static(
            str(model), str(staged), None, quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=per_channel, reduce_range=reduce_range,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=list(exclude), calibrate_method=quantization.CalibrationMethod.MinMax,
            calibration_cache_path=str(ranges),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), out)
    log.info("wrote %s (calibrated on %d photos)", out, counted[0])
    return out


@dataclass(frozen=True)
class MaskAgreement:
    """How a candidate mask matches a reference mask (both ``H×W`` in 0..1)."""

    mae: float  # mean absolute difference, 0..1
    iou: float  # intersection over union of the two masks thresholded at 0.5 (1 when both empty)


def agreement(reference: np.ndarray, candidate: np.ndarray, threshold: float = 0.5) -> MaskAgreement:
    if reference.shape != candidate.shape:
        raise ValueError(f"masks differ in shape: {reference.shape} vs {candidate.shape}")
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    mae = float(np.mean(np.abs(reference - candidate), dtype=np.float64))
    a, b = reference >= threshold, candidate >= threshold
    union = int(np.count_nonzero(a | b))
    iou = 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union
    return MaskAgreement(mae=mae, iou=iou)


def calibration_photos(folder: str | None, count: int):
    """The photos of ``folder`` (read as the CLI reads them), else ``count`` generated photo-like images."""
    if folder:
        from cutout_guard.app.cli import IMAGE_SUFFIXES
        from cutout_guard.core.imagefile import read_image

        for path in sorted(Path(folder).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield read_image(path)
        return
    from .pipeline import bench_image

    sizes = [(1024, 768), (768, 1024), (1280, 960), (900, 900)]
    for seed in range(count):
        width, height = sizes[seed % len(sizes)]
        yield bench_image(width, height, seed=seed)


def attention_matmuls(model: str | Path) -> list[str]:
    """Names of the MatMul nodes next to a Softmax (attention's Q·Kᵀ and its ·V): the ones left in
    fp32 by ``--exclude-attention``."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names = []
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        before = producers.get(node.input[0])
        while before is not None and before.op_type in ("Add", "Reshape", "Mul", "Div"):
            before = producers.get(before.input[0])
        if before is not None and before.op_type == "MatMul":
            names.append(before.name)
        names += [after.name for after in consumers.get(node.output[0], []) if after.op_type == "MatMul"]
    return names


def time_pair(fp32: str, int8: str, threads: int, runs: int, int8_optimization: str) -> dict:
    """Both graphs loaded through the pack's engine (fp32 with its CPU defaults, int8 under
    ``int8_optimization``: onnxruntime fuses QDQ pairs into int8 kernels only from ``extended``),
    timed in alternation on one benchmark photo."""
    from cutout_guard.engines.ben2 import Ben2

    from .common import interleaved_medians, peak_rss_mib
    from .pipeline import bench_image

    image = bench_image()
    models = {"fp32": Ben2.load(fp32, threads=threads), "int8": Ben2.load(int8, threads=threads, optimization=int8_optimization)}
    masks = {label: model.matte(image) for label, model in models.items()}
    times = interleaved_medians({label: (lambda m=model: m.matte(image)) for label, model in models.items()},
                                runs=runs, warmup=0)  # the masks above were the warm-up
    agree = agreement(masks["fp32"], masks["int8"])
    return {"runs_s": times, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "optimization": {"fp32": "basic (the pack's CPU default)", "int8": int8_optimization},
            "mae": agree.mae, "iou": agree.iou,
            "peak_mib": peak_rss_mib()}


def child(script: str, config: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", script, json.dumps(config)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"child failed ({result.returncode}):\n{result.stderr[-3000:]}")
    sys.stderr.write(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an fp32 BEN2 graph (e.g. the benchmark's real architecture)")
    parser.add_argument("--int8", type=Path, help="an int8 graph already written from --model (skips quantizing)")
    parser.add_argument("--out", type=Path, help="where to write the int8 graph (default: a temporary file)")
    parser.add_argument("--photos", help="calibration photos (a folder); default: --calibration generated photos")
    parser.add_argument("--calibration", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ops", nargs="+", default=list(QUANTIZED_OPS), help="op types quantized")
    parser.add_argument("--exclude-attention", action="store_true", help="leave the MatMuls beside each Softmax in fp32")
    parser.add_argument("--int8-optimization", default="extended", choices=["basic", "extended", "all"],
                        help="onnxruntime's level for the int8 graph (QDQ pairs become int8 kernels from extended)")
    parser.add_argument("--no-per-channel", action="store_true")
    parser.add_argument("--no-reduce-range", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .machine import cpu_description, describe

    log.info("CPU: %s", describe(cpu_description()))
    with tempfile.TemporaryDirectory(prefix="ben2-int8-bench-") as tmp:
        int8 = args.int8
        if int8 is None:
            int8 = args.out or Path(tmp) / "ben2.int8.onnx"
            exclude = attention_matmuls(args.model) if args.exclude_attention else []
            made = child(QUANTIZE, {"model": str(args.model), "out": str(int8), "photos": args.photos,
                                    "calibration": args.calibration, "ops": args.ops, "exclude": exclude,
                                    "per_channel": not args.no_per_channel, "reduce_range": not args.no_reduce_range})
            log.info("quantized %s (ops %s, %d nodes left fp32, %s photos) in %.0f s, peak RSS %.2f GiB; %.0f MB → %.0f MB",
                     args.model.name, " ".join(args.ops), len(exclude), args.photos or args.calibration,
                     made["seconds"], made["peak_mib"] / 1024, _size_mb(args.model), _size_mb(int8))
        timed = child(TIME, {"fp32": str(args.model), "int8": str(int8), "threads": args.threads, "runs": args.runs,
                             "int8_optimization": args.int8_optimization})
    fp32_s, int8_s = timed["median_s"]["fp32"], timed["median_s"]["int8"]
    log.info("BEN2, one 1024² image, %d threads, median of %d alternating runs (one process, both loaded: peak %.2f GiB)",
             args.threads, args.runs, timed["peak_mib"] / 1024)
    log.info("| graph | optimisation | s per image | runs |")
    log.info("|---|---|---|---|")
    for label in ("fp32", "int8"):
        runs = ", ".join(f"{s:.2f}" for s in timed["runs_s"][label])
        log.info("| %s | %s | %.2f | %s |", label, timed["optimization"][label],
                 timed["median_s"][label], runs)
    log.info("int8 is %.2f× as fast as fp32 (fp32 s / int8 s)", fp32_s / int8_s)
    log.info("mask agreement on the benchmark photo: MAE %.4f, IoU at 0.5 %.4f — random weights: this shows "
             "speed only, not fidelity", timed["mae"], timed["iou"])
    return 0


def _size_mb(path: Path) -> float:
    extra = Path(str(path) + ".data")
    return (path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)) / 1e6


if __name__ == "__main__":
    raise SystemExit(main())
