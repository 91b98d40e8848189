"""The whole job without ComfyUI: cut out (BEN2), check the cutout itself (the image guard), caption it
(Florence-2) and check the caption (Llama Guard).

``Pipeline.load(paths, devices=...)`` loads the engines once; ``.process(rgb)`` runs one ``H×W×3``
float 0..1 image and returns the RGBA cutout, its alpha, the image verdict, the caption, the text
verdict and the seconds each stage took. The image check and the caption both see the cutout
composited on a neutral background (white, as the Caption and Image Check nodes do for RGBA
images): the published image is the cutout, so what is checked is what is shown. Without an image
guard path the image check does not run (its verdict is None). Used by the command line and the benchmark (which adds its measurements
through the ``around`` hook of :meth:`Pipeline.load` and :meth:`Pipeline.process`); the node
adapters call the same engines one by one.

Every call into an engine's API lives in the ``_load_*`` functions and the stage methods.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np

from ..core import imageops, vocab
from ..core.cpu import resolve_threads

log = logging.getLogger(__name__)

ENGINES = vocab.MODEL_KINDS  # keys of Pipeline.load_seconds
STAGES = vocab.STAGES  # keys of Result.seconds, as in the Save Cutout Report node
# Largest model first: a guard that does not fit (or a damaged GGUF) fails before the other loads.
LOAD_ORDER = ("llama_guard", "florence2", "image_guard", "ben2")
CAPTION_COLOR = vocab.DEFAULT_COLOR

# around(name) is entered around each engine's load (name: an ENGINES key) and each stage of an
# image (a STAGES key); the benchmark samples memory in it.
Around = Callable[[str], ContextManager]


@contextlib.contextmanager
def _nothing(name: str):
    yield


@dataclass(frozen=True)
class Devices:
    """Where each engine runs: the three inputs that differ between the CPU and GPU workflows."""

    provider: str = "CPU"  # BEN2 onnxruntime provider: CPU | CUDA
    precision: str = "fp32"  # Florence-2 and the image guard: fp32 | fp16 | bf16
    n_gpu_layers: int = 0  # Llama Guard layers on the GPU; -1 = all
    device: str = "cpu"  # torch device for Florence-2 and the image guard: cpu | cuda

    def as_report(self) -> dict:
        return {"provider": self.provider, "precision": self.precision, "n_gpu_layers": self.n_gpu_layers}


PRESETS = {name: Devices(**settings) for name, settings in vocab.PRESETS.items()}


def devices_for(preset: str, *, provider: str | None = None, precision: str | None = None, n_gpu_layers: int | None = None) -> Devices:
    """The ``cpu``/``cuda`` preset with any of its three settings overridden."""
    base = PRESETS[preset]
    return Devices(
        provider=provider or base.provider,
        precision=precision or base.precision,
        n_gpu_layers=base.n_gpu_layers if n_gpu_layers is None else n_gpu_layers,
        device=base.device,
    )


@dataclass(frozen=True)
class ModelPaths:
    ben2: Path
    florence2: Path
    llama_guard: Path
    image_guard: Path | None = None  # None: the image check does not run

    def names(self) -> dict[str, str | None]:
        return {name: getattr(self, name).name if getattr(self, name) is not None else None for name in ENGINES}


@dataclass(frozen=True)
class CutoutOptions:
    mask_values: str = "normalized"  # normalized | raw (vocab.MASK_VALUES)


@dataclass(frozen=True)
class CaptionOptions:
    task: str = "<CAPTION>"
    max_new_tokens: int = 256
    num_beams: int = 3
    min_new_tokens: int | None = None  # tests with random weights fix the caption length


@dataclass(frozen=True)
class CheckOptions:
    threshold: float = vocab.DEFAULT_THRESHOLD
    policy: str | None = None  # the categories that count, e.g. "S1,S10"; None = all
    image_threshold: float = vocab.DEFAULT_THRESHOLD  # the image check's: unsafe when P(nsfw) >= it


@dataclass(frozen=True)
class Result:
    """One processed image. ``cutout`` is ``H×W×4`` uint8 RGBA, ``alpha`` ``H×W`` uint8 (its fourth channel)."""

    cutout: np.ndarray
    alpha: np.ndarray
    caption: str
    verdict: object  # engines.llama_guard.Verdict: the caption's
    image_verdict: object = None  # engines.image_guard.ImageVerdict, or None when the image check did not run
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- engine calls


def _load_ben2(path: Path, devices: Devices, threads: int | None):
    from ..engines.ben2 import Ben2

    return Ben2.load(path, provider=devices.provider, threads=threads)


def _load_florence2(path: Path, devices: Devices, threads: int | None):
    from ..engines.florence2 import Florence2

    # outside ComfyUI this process is ours: torch gets the CPU quota unless told otherwise
    return Florence2.load(path, precision=devices.precision, device=devices.device, threads=resolve_threads(threads))


def _load_image_guard(path: Path, devices: Devices, threads: int | None):
    from ..engines.image_guard import ImageGuard

    return ImageGuard.load(path, precision=devices.precision, device=devices.device)


def _load_llama_guard(path: Path, devices: Devices, threads: int | None, n_ctx: int, repack: bool | None = None):
    from ..engines.llama_guard import LlamaGuard

    return LlamaGuard.load(path, n_gpu_layers=devices.n_gpu_layers, n_ctx=n_ctx, threads=threads, repack=repack)


def release_free_memory() -> bool:
    """Give heap memory freed by a stage back to the system (glibc ``malloc_trim``); False where unavailable.

    glibc keeps freed blocks below its (dynamic, up to 32 MiB) mmap threshold in the heap, so one
    stage's activations would stay resident under the next stage's peak.
    """
    global _malloc_trim
    if _malloc_trim is None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        _malloc_trim = getattr(libc, "malloc_trim", False) if libc is not None else False
    if not _malloc_trim:
        return False
    _malloc_trim(0)
    return True


_malloc_trim = None


def caption_view(cutout: np.ndarray, color: str = CAPTION_COLOR) -> np.ndarray:
    """The RGBA cutout (uint8 or float 0..1) as it is shown: composited on ``color``, ``H×W×3`` uint8
    (what the image processors are given), made a band of rows at a time so no full-size float copy is needed."""
    return imageops.shown_uint8(cutout, imageops.parse_color(color))


class Pipeline:
    """The loaded engines. Create with :meth:`load`; free with :meth:`close`."""

    def __init__(self, ben2, florence2, llama_guard, *, paths: ModelPaths, devices: Devices, load_seconds: dict[str, float],
                 image_guard=None):
        self.ben2 = ben2
        self.image_guard = image_guard
        self.florence2 = florence2
        self.llama_guard = llama_guard
        self.paths = paths
        self.devices = devices
        self.load_seconds = load_seconds
        self.trim_memory = True  # release_free_memory() after each stage

    @classmethod
    def load(
        cls,
        paths: ModelPaths,
        *,
        devices: Devices = PRESETS["cpu"],
        threads: int | None = None,
        n_ctx: int = 2048,
        repack: bool | None = None,
        order: tuple[str, ...] = LOAD_ORDER,
        around: Around = _nothing,
        engines: tuple[str, ...] = ENGINES,
    ) -> "Pipeline":
        """Load BEN2, the image guard (when it has a path), Florence-2 and Llama Guard once (seconds per
        load in ``load_seconds``).

        ``repack``: llama.cpp's repacked weight copy (see ``LlamaGuard.load``); ``order``: the load
        order (a permutation of ``ENGINES``); ``around(name)``: a context entered around each load;
        ``engines``: load only these (the batch run stage by stage holds one at a time; the others are None).
        """
        loaded: dict[str, object] = {}
        seconds: dict[str, float] = {}
        loaders = {
            "ben2": lambda: _load_ben2(paths.ben2, devices, threads),
            "florence2": lambda: _load_florence2(paths.florence2, devices, threads),
            "llama_guard": lambda: _load_llama_guard(paths.llama_guard, devices, threads, n_ctx, repack),
            "image_guard": lambda: _load_image_guard(paths.image_guard, devices, threads),
        }
        if sorted(order) != sorted(ENGINES):
            raise ValueError(f"load order must name each of {', '.join(ENGINES)} once, got {order}")
        try:
            for name in (n for n in order if n in engines and getattr(paths, n) is not None):
                with around(name):
                    start = time.perf_counter()
                    loaded[name] = loaders[name]()
                    seconds[name] = time.perf_counter() - start
        except BaseException:
            for engine in loaded.values():
                engine.close()
            raise
        log.info("Loaded the pipeline in %.1f s (%s)", sum(seconds.values()), ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
        return cls(loaded.get("ben2"), loaded.get("florence2"), loaded.get("llama_guard"), paths=paths, devices=devices,
                   load_seconds=seconds, image_guard=loaded.get("image_guard"))

    # -- stages, each callable alone (the benchmark times them apart) ----------------------

    def cut_out(self, rgb: np.ndarray, options: CutoutOptions = CutoutOptions()) -> tuple[np.ndarray, np.ndarray]:
        """``H×W×3`` → (RGBA cutout ``H×W×4`` uint8, alpha ``H×W`` uint8: a view of the cutout's fourth channel).

        uint8 is what the report PNG stores; the float cutout would take four times the memory.
        """
        alpha = self.ben2.matte(rgb, mask_values=options.mask_values)
        self._trim()
        cutout = imageops.rgba_uint8(rgb, alpha)
        return cutout, cutout[..., 3]

    def check_image(self, cutout: np.ndarray, options: CheckOptions = CheckOptions()):
        """The image guard's verdict on the RGBA cutout as shown on the neutral background (what the
        caption sees), or None without an image guard."""
        if self.image_guard is None:
            return None
        verdict = self.image_guard.check(caption_view(cutout), threshold=options.image_threshold)
        self._trim()
        return verdict

    def caption(self, cutout: np.ndarray, options: CaptionOptions = CaptionOptions()) -> str:
        """Caption of the RGBA cutout as shown on the neutral background."""
        text = self.florence2.caption(
            caption_view(cutout),
            task=options.task,
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            min_new_tokens=options.min_new_tokens,
        )
        self._trim()
        return text

    def check(self, caption: str, options: CheckOptions = CheckOptions()):
        """Llama Guard's verdict on the caption."""
        verdict = self.llama_guard.check(caption, policy=options.policy, threshold=options.threshold)
        self._trim()
        return verdict

    def _trim(self) -> None:
        if self.trim_memory:
            release_free_memory()

    def named_categories(self, verdict) -> list[dict]:
        """The verdict's counted categories as ``[{"code", "name"}]`` in the loaded model's naming."""
        return verdict.named_categories(self.llama_guard.template.hazards)

    def process(
        self,
        rgb: np.ndarray,
        *,
        cutout_options: CutoutOptions = CutoutOptions(),
        caption_options: CaptionOptions = CaptionOptions(),
        check_options: CheckOptions = CheckOptions(),
        around: Around = _nothing,
        check_text: str | None = None,
    ) -> Result:
        """One image through the stages (the image check only with an image guard); ``around(stage)`` is
        entered around each. ``rgb`` is released once the cutout is made, unless the caller keeps it.

        ``check_text``: what the check reads instead of the caption (the benchmark's random-weight
        Florence-2 writes no real text; it checks a typical caption, so the prompt has a real length).
        """
        seconds: dict[str, float] = {}

        def timed(stage: str, run: Callable):
            with around(stage):
                start = time.perf_counter()
                value = run()
                seconds[stage] = time.perf_counter() - start
            return value

        cutout, alpha = timed("cutout", lambda: self.cut_out(rgb, cutout_options))
        del rgb  # a caller that holds no reference of its own (``process(read_image(path))``) frees it here
        image_verdict = timed("image_check", lambda: self.check_image(cutout, check_options)) if self.image_guard is not None else None
        caption = timed("caption", lambda: self.caption(cutout, caption_options))
        verdict = timed("safety_check", lambda: self.check(caption if check_text is None else check_text, check_options))
        return Result(cutout=cutout, alpha=alpha, caption=caption, verdict=verdict, image_verdict=image_verdict, seconds=seconds)

    def close(self) -> None:
        for name in ENGINES:
            engine = getattr(self, name)
            if engine is not None:
                engine.close()
                setattr(self, name, None)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
