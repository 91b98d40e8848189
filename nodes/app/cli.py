"""The ``cutout-guard`` command line: batch runs without ComfyUI, model downloads, the benchmark.

    cutout-guard run INPUT... --out DIR [--preset cpu|cuda] [--no-image-check] [--models-dir DIR | --comfyui DIR]
    cutout-guard run INPUT... --out DIR --endpoint cpu|gpu|auto [--routing-policy FILE] [--concurrency N]
    cutout-guard download [ben2 florence2 llama_guard image_guard] [--models-dir DIR | --comfyui DIR]
    cutout-guard bench [...]          (see ``cutout-guard bench --help``)
    cutout-guard submit [...]         (send an image to a RunPod endpoint, when installed)
    cutout-guard plan [...]           (simulate a day of traffic: cost and latency per routing)

``run`` writes, for every input image, the same PNG + ``.json`` report as the Save Cutout Report
node (``<out>/<name>.png``, sub-folders mirroring the input folders) and appends one line per
image to ``<out>/results.jsonl`` (its ``verdict``, and each check that ran as ``image`` / ``text``;
the image check runs unless ``--no-image-check``). A second run over the same inputs skips images whose last line
there is a success. Exit status: 0 when every image succeeded (or had succeeded before), 1 when
any failed, 2 when the run could not start (bad arguments, no images, a model that will not load).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..core import vocab
from ..core.errors import CutoutGuardError, ModelMissing
from ..core.imagefile import DEFAULT_MAX_PIXELS, read_image
from ..core.models import KINDS, get_kind
from ..core.results import RESULTS, append_result, load_done, new_entry
from .stages import DEFAULT_CHUNK, StagePeaks, failure_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DELEGATED = {
    "bench": "time each stage on models of the real shapes with random weights (see `cutout-guard bench --help`)",
    "submit": "send images to a RunPod endpoint (see `cutout-guard submit --help`)",
    "plan": "simulate a day of traffic on CPU / GPU endpoints: cost and latency per routing (see `cutout-guard plan --help`)",
}


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Item:
    """One input image: where it is, how it was named, and its report's name under ``--out``."""

    source: Path
    label: str  # the path as the user would recognise it
    output: str  # report PNG path relative to the output folder, "/"-separated


def collect_inputs(inputs: list[str], out_dir: Path) -> tuple[list[Item], list[str]]:
    """Images named directly or found (recursively, by suffix) in folders; and the problems found.

    A file named on the command line is always an input (a non-image is then reported as a failure);
    in a folder, files without an image suffix and hidden files are passed over, and so is the
    output folder when it lies inside an input folder.
    """
    found: list[tuple[Path, str, str]] = []  # source, label, relative name without suffix
    problems: list[str] = []
    out_resolved = out_dir.resolve()
    for given in inputs:
        path = Path(given)
        if path.is_file():
            found.append((path, given, path.stem))
        elif path.is_dir():
            for entry in sorted(path.rglob("*")):
                rel = entry.relative_to(path)
                if any(part.startswith(".") for part in rel.parts) or not entry.is_file():
                    continue
                if entry.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if out_resolved == entry.resolve().parent or out_resolved in entry.resolve().parents:
                    continue
                found.append((entry, str(entry), rel.with_suffix("").as_posix()))
        else:
            problems.append(f"{given}: no such file or folder")
    unique: dict[Path, tuple[Path, str, str]] = {}
    for entry in found:  # the same file reached twice counts once
        unique.setdefault(entry[0].resolve(), entry)
    # Two files with the same stem (photo.jpg and photo.png): both keep their full name.
    stems: dict[str, int] = {}
    for _, _, stem in unique.values():
        stems[stem.lower()] = stems.get(stem.lower(), 0) + 1
    items = []
    for source, label, stem in unique.values():
        name = stem if stems[stem.lower()] == 1 else f"{stem}{source.suffix}"
        items.append(Item(source=source, label=label, output=f"{name}.png"))
    return items, problems




# ----------------------------------------------------------------------------- models


def models_root(args) -> Path:
    if getattr(args, "comfyui", None):
        comfy = Path(args.comfyui)
        if not comfy.is_dir():
            raise ModelMissing(f"--comfyui {comfy}: no such folder — give the ComfyUI folder (the one holding main.py and models/)")
        return comfy / "models"
    return Path(args.models_dir)


def resolve_model(kind_name: str, value: str, root: Path, *, allow_download: bool) -> Path:
    """A model given as a name inside ``root/<folder key>`` (downloaded when it is a missing default) or as a path."""
    from ..core.download import obtain
    from ..core.models import verify

    kind = get_kind(kind_name)
    given = Path(value)
    if given.is_absolute() or len(given.parts) > 1:
        if not given.exists():
            raise ModelMissing(f"{kind.label} model {given} does not exist — give a file name in {root / kind.folder_key} or an existing path")
        verify(kind, given)
        return given
    return obtain(kind, value, [root / kind.folder_key], allow_download=allow_download, progress=_byte_bar(kind.label))


def _byte_bar(label: str):
    """A download progress callback drawing one tqdm bar in bytes."""
    from tqdm.auto import tqdm

    state: dict = {}

    def progress(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total or None, unit="B", unit_scale=True, desc=label, leave=False)
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    return progress


# ----------------------------------------------------------------------------- run


def run(args) -> int:
    from .pipeline import CaptionOptions, CheckOptions, CutoutOptions, devices_for

    out_dir = Path(args.out)
    items, problems = collect_inputs(args.inputs, out_dir)
    for problem in problems:
        log.error(problem)
    if problems:
        return EXIT_USAGE
    if not items:
        log.error("no images found in %s (looked for %s)", ", ".join(args.inputs), " ".join(IMAGE_SUFFIXES))
        return EXIT_USAGE
    if args.endpoint:
        from ..router.batch import run_remote

        return run_remote(args, items)

    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS
    done = load_done(results_path)
    todo = [item for item in items if item.output not in done]
    skipped = len(items) - len(todo)
    if skipped:
        log.info("%d of %d images already done in %s: skipping them", skipped, len(items), results_path)
    if not todo:
        print(f"All {len(items)} images were already done — results in {results_path}")
        return EXIT_OK

    devices = devices_for(args.preset, provider=args.provider, precision=args.precision, n_gpu_layers=args.n_gpu_layers)
    options = {
        "cutout_options": CutoutOptions(mask_values=args.mask_values),
        "caption_options": CaptionOptions(task=args.task, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams),
        "check_options": CheckOptions(threshold=args.threshold, policy=args.policy, image_threshold=args.image_threshold),
    }
    try:
        paths = resolve_paths(args)
        if args.load == "all":
            succeeded, failed = run_all_loaded(todo, paths, devices, options, out_dir, args)
        else:
            succeeded, failed = run_stage_by_stage(todo, paths, devices, options, out_dir, args)
    except CutoutGuardError as exc:  # a model that is missing or will not load
        log.error("%s", exc)
        return EXIT_USAGE
    print(
        f"{succeeded} done, {failed} failed, {skipped} skipped (done before) — reports in {out_dir}, "
        f"one line per image in {results_path}"
    )
    return EXIT_FAILED if failed else EXIT_OK


def resolve_paths(args):
    """The four models' paths (downloaded when a default is missing, unless ``--offline``)."""
    from .pipeline import ModelPaths

    root = models_root(args)
    return ModelPaths(
        ben2=resolve_model("ben2", args.ben2, root, allow_download=not args.offline),
        florence2=resolve_model("florence2", args.florence2, root, allow_download=not args.offline),
        llama_guard=resolve_model("llama_guard", args.llama_guard, root, allow_download=not args.offline),
        image_guard=None if args.no_image_check
        else resolve_model("image_guard", args.image_guard, root, allow_download=not args.offline),
    )


def _progress(total: int, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc="cutout-guard", dynamic_ncols=True)


def run_all_loaded(todo: list[Item], paths, devices, options: dict, out_dir: Path, args) -> tuple[int, int]:
    """``--load all``: every model loaded for the whole batch, each image through all stages in turn."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .pipeline import Pipeline

    failed = succeeded = 0
    peaks = StagePeaks()
    with peaks.around("load"):
        pipeline = Pipeline.load(paths, devices=devices, threads=args.threads or None, n_ctx=args.n_ctx)
    with pipeline:
        with logging_redirect_tqdm(), _progress(len(todo), "img") as bar:
            for item in todo:
                entry = process_one(item, pipeline, out_dir, options, args, around=peaks.around)
                append_result(out_dir / RESULTS, entry)
                if entry["error"] is None:
                    succeeded += 1
                else:
                    failed += 1
                    log.warning("%s: %s", item.label, entry["error"])
                bar.update(1)
                bar.set_postfix(failed=failed, refresh=False)
    log_peaks(peaks)
    return succeeded, failed


def log_peaks(peaks) -> None:
    if peaks.peaks:
        log.info("peak memory by stage: %s", peaks.summary())


def run_stage_by_stage(todo: list[Item], paths, devices, options: dict, out_dir: Path, args) -> tuple[int, int]:
    """``--load one`` (the default): one model in memory at a time, the batch in chunks (see app/stages.py)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .pipeline import Pipeline
    from .stages import run_by_stages

    def load(engines):
        return Pipeline.load(paths, devices=devices, threads=args.threads or None, n_ctx=args.n_ctx, engines=engines)

    def finish(item, result, pipeline) -> None:
        entry = new_entry(item.label, item.output)
        write_report(item, result, pipeline, out_dir, options, args, entry)
        append_result(out_dir / RESULTS, entry)

    stages = 4 if paths.image_guard is not None else 3
    peaks = StagePeaks()
    with logging_redirect_tqdm(), _progress(len(todo) * stages, "step") as bar:
        counts = run_by_stages(
            todo, load=load, finish=finish, out_dir=out_dir, chunk=args.chunk, progress=bar, peaks=peaks,
            options={**options, "max_pixels": args.max_pixels, "image_check": paths.image_guard is not None},
        )
    log_peaks(peaks)
    return counts


def process_one(item: Item, pipeline, out_dir: Path, options: dict, args, around=None) -> dict:
    """Run one image and write its report; the results.jsonl entry (``error`` set on failure).

    ``options``: the ``*_options`` keywords of ``Pipeline.process``; ``around``: its stage hook.
    """
    entry = new_entry(item.label, item.output)
    start = time.perf_counter()
    hook = {} if around is None else {"around": around}
    try:
        result = pipeline.process(read_image(item.source, max_pixels=args.max_pixels), **options, **hook)  # holds no copy
        write_report(item, result, pipeline, out_dir, options, args, entry)
    except Exception as exc:  # one bad image must not end an overnight batch
        entry["error"] = failure_text(item.label, exc)
    if entry["error"] is not None:
        entry["seconds"] = {"total": round(time.perf_counter() - start, 4)}
    return entry


def write_report(item: Item, result, pipeline, out_dir: Path, options: dict, args, entry: dict) -> None:
    """Write one processed image's report PNG + ``.json`` (the unsafe action applied) and fill its
    ``results.jsonl`` line ``entry``; ``seconds["total"]`` is the sum of the stages'."""
    from ..core import report

    seconds = {**result.seconds, "total": sum(result.seconds.values())}
    record = make_record(result, pipeline, options["caption_options"], args, seconds, report)
    shown = result.cutout if record["safe"] is True else report.apply_unsafe_action(result.cutout, args.unsafe_action)
    png_path = out_dir / item.output
    png_path.parent.mkdir(parents=True, exist_ok=True)
    report.write(png_path, shown, record)
    entry.update(
        caption=record["caption"],
        verdict="safe" if record["safe"] is True else "unsafe",
        image=record["image"],
        text=record["text"],
        seconds=record["seconds"],
        replaced_text=record.get("replaced_text"),
    )


def make_record(result, pipeline, caption_options, args, seconds: dict, report) -> dict:
    """The schema-2 report of one processed image: the image check (when it ran) and the caption's check."""
    names = pipeline.paths.names()
    verdict = result.verdict
    text = {**verdict.to_dict(pipeline.llama_guard.template.hazards), "model": names["llama_guard"]}
    image = result.image_verdict.to_dict() if result.image_verdict is not None else None
    return report.make_report(
        caption=result.caption,
        task=caption_options.task,
        image=report.read_verdict(image, what="the image check") if image is not None else None,
        text=report.read_verdict(text, what="the text check"),
        unsafe_action=args.unsafe_action,
        models=names,
        devices=pipeline.devices.as_report(),
        seconds=seconds,
    )


# ----------------------------------------------------------------------------- download


def download(args) -> int:
    from ..core.download import obtain

    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        log.error("unknown model kind %s — choose from %s", ", ".join(unknown), ", ".join(KINDS))
        return EXIT_USAGE
    try:
        root = models_root(args)
    except CutoutGuardError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    names = {"ben2": args.ben2, "florence2": args.florence2, "llama_guard": args.llama_guard, "image_guard": args.image_guard}
    failed = 0
    for kind_name in args.kinds or list(names):
        kind = get_kind(kind_name)
        name = names.get(kind_name) or kind.defaults[0].name
        folder = root / kind.folder_key
        try:
            path = obtain(kind, name, [folder], progress=_byte_bar(f"{kind.label} {name}"))
        except CutoutGuardError as exc:
            log.error("%s", exc)
            failed += 1
            continue
        print(f"{kind_name}: {path}")
    return EXIT_FAILED if failed else EXIT_OK


# ----------------------------------------------------------------------------- parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--models-dir",
        default=os.environ.get("CUTOUT_GUARD_MODELS_DIR", "models"),
        help="models folder holding ben2/, florence2/, LLM/ and image_guard/ (default: $CUTOUT_GUARD_MODELS_DIR or ./models)",
    )
    where.add_argument("--comfyui", metavar="DIR", help="use the model folders of the ComfyUI installed in DIR (DIR/models)")
    parser.add_argument("--ben2", default=KINDS["ben2"].defaults[0].name, help="BEN2 .onnx: a name in ben2/ or a path (default: %(default)s)")
    parser.add_argument(
        "--florence2", default=KINDS["florence2"].defaults[0].name, help="Florence-2 folder: a name in florence2/ or a path (default: %(default)s)"
    )
    parser.add_argument(
        "--llama-guard",
        default=KINDS["llama_guard"].defaults[0].name,
        help="Llama Guard .gguf: a name in LLM/ or a path (default: %(default)s)",
    )
    parser.add_argument(
        "--image-guard",
        default=KINDS["image_guard"].defaults[0].name,
        help="image guard (NSFW classifier) folder: a name in image_guard/ or a path (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cutout-guard",
        description="Cut out the subject of photos (BEN2), check the cutout itself (an NSFW image classifier), "
        "caption it (Florence-2) and check the caption (Llama Guard 3).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (model loading, devices, threads)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,download,bench,submit,plan}")

    p = sub.add_parser("run", help="process image files and folders, writing a report per image and results.jsonl")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the report PNGs, their .json and results.jsonl")
    p.add_argument("--preset", "--device", dest="preset", choices=tuple(vocab.PRESETS), default="cpu",
                   help="cpu: provider CPU, precision fp32, n_gpu_layers 0; cuda: CUDA, fp16, -1 (--device is its old name)")
    p.add_argument("--provider", choices=vocab.PROVIDERS, help="BEN2's onnxruntime provider (overrides --preset)")
    p.add_argument("--precision", choices=vocab.PRECISIONS, help="Florence-2 and image guard precision (overrides --preset; half precision runs as fp32 on a CPU)")
    p.add_argument("--n-gpu-layers", type=int, help="Llama Guard layers on the GPU, -1 = all (overrides --preset)")
    _add_model_options(p)
    p.add_argument("--offline", action="store_true", help="never download: fail when a model is missing")
    p.add_argument("--mask-values", choices=vocab.MASK_VALUES, default="normalized",
                   help="BEN2's mask: normalized (stretched to 0..1, as BEN2's runner does) or raw probabilities (default: %(default)s)")
    p.add_argument("--task", choices=vocab.CAPTION_TASKS, default="<CAPTION>", help="Florence-2 caption task")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest caption in tokens (default: %(default)s)")
    p.add_argument("--num-beams", type=int, default=3, help="beam width, 1 = greedy (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=vocab.DEFAULT_THRESHOLD, help="text check: unsafe when p_unsafe >= this, 0..1 (default: %(default)s)")
    p.add_argument("--image-threshold", type=float, default=vocab.DEFAULT_THRESHOLD, help="image check: unsafe when P(nsfw) >= this, 0..1 (default: %(default)s)")
    p.add_argument("--no-image-check", action="store_true", help="skip the image-level check (only the caption is checked; the report's image check is null)")
    p.add_argument("--policy", "--categories", dest="policy",
                   help="Llama Guard categories that count, e.g. S1,S10-S12 (default: all; --categories is its old name)")
    p.add_argument("--unsafe-action", choices=vocab.UNSAFE_ACTIONS, default="blur", help="what the saved PNG shows when unsafe (default: %(default)s, as in the Save Cutout Report node)")
    p.add_argument("--threads", type=int, default=vocab.DEFAULT_THREADS, help="CPU threads, 0 = the CPUs this process may use (default)")
    p.add_argument("--n-ctx", type=int, default=2048, help="Llama Guard context in tokens (default: %(default)s)")
    p.add_argument("--load", choices=("one", "all"), default="one",
                   help="one: one model in memory at a time, the images going stage by stage in chunks of --chunk "
                        "(peak memory of the largest model, not of all four); all: every model loaded for the whole batch (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="N",
                   help="with --load one: images per chunk; each model loads once per chunk (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse images with more pixels, checked before decoding; the default fits a 4 GB worker (default: %(default)s)")
    remote = p.add_argument_group("on RunPod endpoints (instead of this machine; the endpoint's workflow sets the models and devices)")
    remote.add_argument("--endpoint", metavar="NAME|auto", help="send every image as a job to this endpoint of the policy (cpu, gpu), or auto: the policy's rules for a batch request")
    remote.add_argument("--routing-policy", metavar="FILE", help="routing policy TOML, as `cutout-guard submit --policy` takes (default: the built-in policy)")
    remote.add_argument("--concurrency", type=int, metavar="N", help="jobs in flight at most (default: the endpoints' workers, from the policy or /health)")
    remote.add_argument("--tier", help="the tier the policy's rules see for these images (default: none)")
    remote.add_argument("--at", metavar="TIME", help="route as if it were this ISO 8601 time (UTC unless it names an offset; default: the clock at each image)")
    p.set_defaults(handler=run)

    d = sub.add_parser("download", help="download the default models (checked against the hub's sha256) into the models folder")
    d.add_argument("kinds", nargs="*", metavar="KIND", help=f"any of {', '.join(KINDS)} (default: all)")
    _add_model_options(d)
    d.set_defaults(handler=download)

    for name, help_text in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _devtools_bench():
    """The benchmark module from the checkout's ``devtools/`` (it never ships), or None with a message."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "devtools" / "bench").is_dir() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))
    try:
        from devtools.bench import pipeline
    except ImportError:
        log.error("`cutout-guard bench` needs the developer tools (devtools/), which are not installed with the pack — "
                  "run it from a git checkout: git clone the repository, pip install -e . and run it there")
        return None
    return pipeline


def _delegate(command: str, argv: list[str]) -> int:
    if command == "bench":
        bench = _devtools_bench()
        return EXIT_USAGE if bench is None else bench.main(argv)
    if command == "plan":
        from ..router.plan import plan_main

        return plan_main(argv)
    try:
        from ..router.cli import submit_main
    except ImportError as exc:
        log.error("`cutout-guard submit` is not available in this install (%s)", exc)
        return EXIT_USAGE
    return submit_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv[:1] or "--verbose" in argv[:1]
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rest = argv[1:] if verbose else argv
    if rest and rest[0] in DELEGATED:
        return _delegate(rest[0], rest[1:])
    args = build_parser().parse_args(argv)
    package = __name__.split(".")[0]
    levels = {f"{package}": logging.INFO}  # the pack's own progress lines
    if not args.verbose:
        levels[f"{package}.engines"] = logging.WARNING
    before = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        log.error("interrupted — run the same command again to continue where it stopped")
        return 130
    finally:  # called in-process (tests, a batch script), the caller's logging is left as it was
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
