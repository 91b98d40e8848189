"""A batch run stage by stage: one model in memory at a time.

The images go in chunks of ``chunk`` images. For each chunk, BEN2 alone is loaded and cuts every
image out (the uint8 cutouts wait in ``<out>/.stages/``), then it is released and the
image guard checks them, then Florence-2 captions them, then Llama Guard checks the captions and
each image's report is written and its ``results.jsonl`` line appended. So the peak memory is the
largest single stage's, not the sum of the four models, at the price of loading each model once
per chunk. The cutouts wait uncompressed (``.npy``, 4 bytes a pixel: a chunk of 16 photos of 12 MP
takes 0.8 GB of disk for a moment), read back memory-mapped. An interrupted run resumes as any run does, from ``results.jsonl``: the images of the
chunk it stopped in run again.

Each image's report is the same as in the run with every model loaded: the stages see the uint8
cutout in both.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import CutoutGuardError
from ..core.imagefile import read_image
from ..core.results import RESULTS, append_result, new_entry
from .pipeline import Pipeline, Result

log = logging.getLogger(__name__)

WORK_FOLDER = ".stages"  # under --out; removed when the run ends
DEFAULT_CHUNK = 16  # images per chunk: each model loads once per chunk


@dataclass
class Pending:
    """One image between stages: what its finished stages produced, or the error that ended it."""

    item: object  # cli.Item
    cutout_file: Path
    seconds: dict[str, float] = field(default_factory=dict)
    image_verdict: object = None
    caption: str | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- peak memory per stage


def reset_peak_memory() -> bool:
    """Start a new peak-RSS window for this process (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory(pid: int | str = "self") -> int | None:
    """A process's peak RSS in bytes (``VmHWM``; this one's by default, since the last
    :func:`reset_peak_memory`), or None where the system cannot tell."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class StagePeaks:
    """The peak memory of each stage over a run, in either mode (``with peaks.around(stage):``), and
    of the whole run: resetting the kernel's peak for a stage also resets the process's own
    (``ru_maxrss`` included), so the peak since the last reset is folded in before each reset."""

    def __init__(self):
        self.peaks: dict[str, int] = {}
        self.whole = 0  # the whole run's peak so far, in bytes

    def _fold(self) -> None:
        peak = peak_memory()
        if peak is not None:
            self.whole = max(self.whole, peak)

    @contextlib.contextmanager
    def around(self, stage: str):
        self._fold()
        tracked = reset_peak_memory()
        try:
            yield
        finally:
            peak = peak_memory() if tracked else None
            if peak is not None:
                self.peaks[stage] = max(peak, self.peaks.get(stage, 0))
                self.whole = max(self.whole, peak)

    def summary(self) -> str:
        """``cutout 2365 MiB, caption 1228 MiB, …; whole run 2410 MiB`` (empty where the system cannot tell)."""
        self._fold()
        if not self.peaks:
            return ""
        stages = ", ".join(f"{stage} {peak / 2**20:.0f} MiB" for stage, peak in self.peaks.items())
        return f"{stages}; whole run {self.whole / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------- the run


def run_by_stages(todo, *, load: Callable[[tuple[str, ...]], Pipeline], options: dict, finish: Callable,
                  out_dir: Path, chunk: int = DEFAULT_CHUNK, progress=None, peaks: StagePeaks | None = None) -> tuple[int, int]:
    """Run ``todo`` (cli.Items) stage by stage in chunks; (succeeded, failed).

    ``load(engines)``: a Pipeline holding only those engines; ``options``: the ``*_options`` of each
    stage plus ``max_pixels`` and ``image_check`` (bool); ``finish(item, result, pipeline)`` writes one
    image's report and appends its ``results.jsonl`` line (a failed image's line is appended here); ``progress``: a tqdm-like bar
    advanced once per image and stage; ``peaks``: records each stage's peak memory, its model's load included.
    """
    peaks = peaks or StagePeaks()
    work = out_dir / WORK_FOLDER
    chunk = max(1, chunk)
    succeeded = failed = 0
    try:
        for start in range(0, len(todo), chunk):
            shutil.rmtree(work, ignore_errors=True)  # what an interrupted run left: its chunk runs again
            work.mkdir(parents=True)
            batch = [Pending(item, work / f"{index}.npy") for index, item in enumerate(todo[start : start + chunk])]
            for name, engines, step in _stages(options, finish):
                live = [p for p in batch if p.error is None]
                if live:
                    with peaks.around(name):
                        _run_stage(name, engines, step, live, load, progress)
            for pending in batch:
                if pending.error is None:
                    succeeded += 1
                    continue
                failed += 1
                log.warning("%s: %s", pending.item.label, pending.error)
                entry = new_entry(pending.item.label, pending.item.output, error=pending.error)
                entry["seconds"] = {"total": round(sum(pending.seconds.values()), 4)}
                append_result(out_dir / RESULTS, entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return succeeded, failed


def _run_stage(name: str, engines: tuple[str, ...], step: Callable, live: list[Pending], load, progress) -> None:
    """Load the stage's model, run ``step(pipeline, pending)`` on each image (it returns the seconds
    spent on the stage's own files, left out of the stage's time), release the model."""
    started = time.perf_counter()
    pipeline = load(engines)
    try:
        for pending in live:
            begun = time.perf_counter()
            io_seconds = 0.0
            try:
                io_seconds = step(pipeline, pending)
            except Exception as exc:  # one bad image must not end an overnight batch
                pending.error = failure_text(pending.item.label, exc)
            pending.seconds[name] = time.perf_counter() - begun - io_seconds
            if progress is not None:
                progress.update(1)
    finally:
        pipeline.close()
    log.info("stage %s: %d image(s) in %.1f s", name, len(live), time.perf_counter() - started)


def failure_text(label: str, exc: Exception) -> str:
    """What a failed image's ``error`` says: the pack's own message, or the exception's type and text
    (whose traceback goes to the debug log)."""
    if isinstance(exc, CutoutGuardError):
        return str(exc)
    log.debug("failure on %s", label, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def _stages(options: dict, finish: Callable):
    """(stage name, engines it needs, step) in order; the image check only when there is an image guard."""

    def cut_out(pipeline: Pipeline, pending: Pending) -> float:
        cutout, _ = pipeline.cut_out(read_image(pending.item.source, max_pixels=options["max_pixels"]), options["cutout_options"])
        begun = time.perf_counter()
        np.save(pending.cutout_file, cutout, allow_pickle=False)
        return time.perf_counter() - begun

    def check_image(pipeline: Pipeline, pending: Pending) -> float:
        cutout, io_seconds = _read_cutout(pending)
        pending.image_verdict = pipeline.check_image(cutout, options["check_options"])
        return io_seconds

    def caption(pipeline: Pipeline, pending: Pending) -> float:
        cutout, io_seconds = _read_cutout(pending)
        pending.caption = pipeline.caption(cutout, options["caption_options"])
        return io_seconds

    def check(pipeline: Pipeline, pending: Pending) -> float:
        begun = time.perf_counter()
        verdict = pipeline.check(pending.caption, options["check_options"])
        checked = time.perf_counter()
        seconds = {**pending.seconds, "safety_check": checked - begun}
        cutout, _ = _read_cutout(pending)
        result = Result(cutout=cutout, alpha=cutout[..., 3], caption=pending.caption, verdict=verdict,
                        image_verdict=pending.image_verdict, seconds=seconds)
        finish(pending.item, result, pipeline)
        return time.perf_counter() - checked  # reading the cutout and writing the report are not the check's time

    stages = [("cutout", ("ben2",), cut_out)]
    if options["image_check"]:
        stages.append(("image_check", ("image_guard",), check_image))
    stages += [("caption", ("florence2",), caption), ("safety_check", ("llama_guard",), check)]
    return stages


def _read_cutout(pending: Pending) -> tuple[np.ndarray, float]:
    """The image's uint8 RGBA cutout as the cutout stage left it, and the seconds reading it took."""
    begun = time.perf_counter()
    cutout = np.load(pending.cutout_file, mmap_mode="r", allow_pickle=False)  # clean pages the system may drop
    return cutout, time.perf_counter() - begun
