"""The image-level safety check on transformers: ``ImageGuard.load(path, precision=...).check(rgb) -> ImageVerdict``.

A model is a folder in the layout of ``Falconsai/nsfw_image_detection``: ``config.json`` of a
native image classifier (``ViTForImageClassification``; never ``trust_remote_code``),
``preprocessor_config.json`` and ``model.safetensors`` (pickle files are never read). Two or more
labels, one of them the unsafe one (``nsfw`` by default).

Pre-processing follows the folder's ``preprocessor_config.json`` as transformers' ViT image
processor does, in numpy and Pillow (so no torchvision is needed): the 8-bit RGB image resized to
``size`` with the configured Pillow filter, times ``rescale_factor``, minus ``image_mean``, over
``image_std``, channels first.

Verdict: ``p_unsafe`` is the model's own probability of the unsafe label (softmax over the
labels); unsafe when ``p_unsafe >= threshold`` (default 0.5: the unsafe label is at least as
likely as all the others together). Fail closed: a probability that is not a finite number gives
an unsafe verdict with the reason.

Precision, device and threads as for Florence-2 (:mod:`.torch_device`): fp16/bf16 run as fp32 on a
CPU; ``cuda`` on a torch without CUDA is a clear error; ``threads`` applies to this model's runs only.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import BadInput, MissingDependency, ModelCorrupt
from ..core import imageops
from ..core.models import safetensors_problem
from .torch_device import precision_name, release, resolve_device, resolve_dtype, torch_threads

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
UNSAFE_LABEL = "nsfw"
WEIGHTS = "model.safetensors"
MODEL_TYPES = ("vit",)  # native image classifiers whose pre-processing this module reproduces
INSTALL_HINT = "run `pip install -r requirements.txt` in the Cutout Guard folder (needs transformers)"
FETCH_HINT = (
    "delete the folder and run `python install.py --models image_guard`, or download "
    "Falconsai/nsfw_image_detection (config.json, preprocessor_config.json, model.safetensors) into it"
)
# Pillow filters by the numbers transformers' processors store as ``resample``
PIL_FILTERS = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


def import_transformers():
    """``(torch, transformers)``, or MissingDependency naming the fix."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependency(f"the image guard needs {exc.name} — {INSTALL_HINT}") from None
    return torch, transformers


@dataclass(frozen=True)
class ImageVerdict:
    """One image's verdict. ``label`` is the most likely label; ``p_unsafe`` the unsafe label's probability."""

    safe: bool
    p_unsafe: float | None
    label: str
    threshold: float
    model: str
    reason: str

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "safe": self.safe,
            "p_unsafe": self.p_unsafe,
            "threshold": self.threshold,
            "label": self.label,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Preprocessing:
    """What ``preprocessor_config.json`` says: target size, Pillow filter and normalisation."""

    height: int
    width: int
    resample: int
    do_resize: bool
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def read(cls, path: Path) -> "Preprocessing":
        try:
            config = json.loads(path.read_text())
            size = config.get("size", {"height": 224, "width": 224})
            if isinstance(size, int):
                size = {"height": size, "width": size}
            return cls(
                height=int(size["height"]),
                width=int(size["width"]),
                resample=int(config.get("resample", 2)),
                do_resize=bool(config.get("do_resize", True)),
                do_rescale=bool(config.get("do_rescale", True)),
                rescale_factor=float(config.get("rescale_factor", 1 / 255)),
                do_normalize=bool(config.get("do_normalize", True)),
                mean=tuple(float(v) for v in config.get("image_mean", (0.5, 0.5, 0.5))),
                std=tuple(float(v) for v in config.get("image_std", (0.5, 0.5, 0.5))),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelCorrupt(f"image guard {path} is unreadable ({type(exc).__name__}: {exc}) — {FETCH_HINT}") from None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``H×W×3`` float 0..1 (or uint8) → ``3×h×w`` float32 model input."""
        from PIL import Image

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise BadInput(f"the image guard expects an H×W×3 RGB image, got shape {rgb.shape}")
        pixels = imageops.to_uint8(rgb)
        if self.do_resize:
            resample = getattr(Image.Resampling, PIL_FILTERS.get(self.resample, "BILINEAR"))
            image = Image.fromarray(pixels, mode="RGB").resize((self.width, self.height), resample=resample)
            pixels = np.asarray(image)
        array = pixels.astype(np.float32)
        if self.do_rescale:
            array = array * np.float32(self.rescale_factor)
        if self.do_normalize:
            array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))


def check_model_folder(path: Path) -> dict:
    """The folder's ``config.json``; ModelCorrupt unless it is a native classifier with whole safetensors weights."""
    if not path.is_dir():
        raise ModelCorrupt(f"image guard {path} is not a folder — {FETCH_HINT}")
    missing = [name for name in ("config.json", "preprocessor_config.json", WEIGHTS) if not (path / name).is_file()]
    if WEIGHTS in missing:
        pickled = sorted(p.name for p in [*path.glob("*.bin"), *path.glob("*.pt")])
        if pickled:
            missing[missing.index(WEIGHTS)] = f"{WEIGHTS} (found {', '.join(pickled)}: pickle files are never loaded)"
    if missing:
        raise ModelCorrupt(f"image guard {path} is missing {', '.join(missing)} — {FETCH_HINT}")
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError:
        raise ModelCorrupt(f"image guard {path}: config.json is not valid JSON — {FETCH_HINT}") from None
    if config.get("auto_map") or config.get("model_type") not in MODEL_TYPES:
        raise ModelCorrupt(
            f"image guard {path} is not a native image classifier of a supported type (model_type "
            f"{config.get('model_type')!r}{', needs remote code' if config.get('auto_map') else ''}; supported: "
            f"{', '.join(MODEL_TYPES)}) — the pack never runs code shipped with a model; {FETCH_HINT}"
        )
    problem = safetensors_problem(path / WEIGHTS)
    if problem:
        raise ModelCorrupt(f"image guard {path} is damaged ({problem}) — {FETCH_HINT}")
    return config


def unsafe_index(labels: dict[int, str], unsafe_label: str, path: Path) -> int:
    """The index of ``unsafe_label`` among the model's labels (case-insensitive)."""
    found = [index for index, name in labels.items() if str(name).lower() == unsafe_label.lower()]
    if len(labels) < 2 or len(found) != 1:
        raise ModelCorrupt(
            f"image guard {path}: labels {sorted(labels.values())} do not include exactly one {unsafe_label!r} "
            f"(and at least one other) — give the unsafe label's name, or {FETCH_HINT}"
        )
    return found[0]


@dataclass
class ImageGuard:
    """A loaded image classifier. Create with :meth:`load`; free with :meth:`close`."""

    model: object
    preprocess: Preprocessing
    labels: dict[int, str]
    unsafe: int  # index of the unsafe label
    path: Path
    device: object  # torch.device
    dtype: object  # torch.dtype
    threads: int | None = None  # torch threads for this model's runs (put back after); None: torch's setting

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        precision: str = "fp32",
        device: str | None = "cpu",
        threads: int | None = None,
        unsafe_label: str = UNSAFE_LABEL,
    ) -> "ImageGuard":
        torch, transformers = import_transformers()
        path = Path(path)
        config = check_model_folder(path)
        preprocess = Preprocessing.read(path / "preprocessor_config.json")
        labels = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
        unsafe = unsafe_index(labels, unsafe_label, path)
        torch_device = resolve_device(torch, device, "Image guard")
        dtype = resolve_dtype(torch, precision, torch_device, "Image guard")
        try:
            with torch_threads(threads):
                model = transformers.AutoModelForImageClassification.from_pretrained(
                    path, dtype=dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True
                )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelCorrupt(
                f"image guard {path} could not be loaded ({type(exc).__name__}: {str(exc).strip()[:300]}) — {FETCH_HINT}"
            ) from None
        model = model.to(torch_device).eval()
        log.info("Image guard: %s on %s in %s", path.name, torch_device, precision_name(dtype))
        return cls(model=model, preprocess=preprocess, labels=labels, unsafe=unsafe, path=path, device=torch_device,
                   dtype=dtype, threads=threads)

    @property
    def running_precision(self) -> str:
        return precision_name(self.dtype)

    @property
    def unsafe_label(self) -> str:
        return self.labels[self.unsafe]

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """``H×W×3`` float 0..1 → the label probabilities (float64, in label order)."""
        import torch

        if self.model is None:
            raise RuntimeError("image guard model is closed")
        pixels = torch.from_numpy(self.preprocess(rgb)).unsqueeze(0).to(self.device, self.dtype)
        with torch_threads(self.threads), torch.inference_mode():
            logits = self.model(pixel_values=pixels).logits[0]
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()

    def check(self, rgb: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD) -> ImageVerdict:
        """One image's verdict: unsafe when the unsafe label's probability reaches ``threshold``."""
        if not 0.0 <= threshold <= 1.0:
            raise BadInput(f"threshold must be between 0 and 1, got {threshold}")
        probabilities = self.probabilities(rgb)
        p = float(probabilities[self.unsafe])
        label = self.labels[int(np.argmax(probabilities))] if np.all(np.isfinite(probabilities)) else "?"
        if not math.isfinite(p):
            return ImageVerdict(False, None, label, threshold, self.path.name,
                                "the model's probability is not a number: unsafe by default")
        if p >= threshold:
            reason = f"p_unsafe {p:.3f} >= threshold {threshold} ('{self.unsafe_label}')"
        else:
            reason = f"p_unsafe {p:.3f} < threshold {threshold}"
        return ImageVerdict(p < threshold, p, label, threshold, self.path.name, reason)

    def close(self) -> None:
        """Drop the model and return its memory (GPU memory too)."""
        self.model = None
        release(self.device)
