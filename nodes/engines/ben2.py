"""BEN2 background matting on onnxruntime: ``Ben2.load(path, provider=...).matte(rgb) -> alpha``.

Pre-processing follows the official ONNX runner: RGB resized to 1024², values in 0..1 (no
mean/std), NCHW. The network's output is already a probability map ``[1,1,1024,1024]`` (float16
in the published file: cast to float32). Post-processing min-max normalises it, as the runner
does, except that a flat map (max = min) is returned as is instead of dividing by zero; the raw
map is available with ``mask_values="raw"``. The map is resized back to the input size (bilinear,
antialiased when shrinking). The model has a fixed batch of 1: callers loop over images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import imageops
from ..core.errors import BadInput, ModelCorrupt
from ..core.vocab import MASK_VALUES
from .onnx_runtime import create_session

log = logging.getLogger(__name__)

INPUT_SIZE = 1024
FLAT_EPSILON = 1e-6


def preprocess(rgb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """``H×W×3`` float 0..1 → ``[1,3,size,size]`` float32."""
    rgb = rgb.astype(np.float32, copy=False)
    resized = rgb if rgb.shape[:2] == (size, size) else imageops.resize(rgb, size, size)
    return np.ascontiguousarray(np.clip(resized, 0.0, 1.0).transpose(2, 0, 1)[None])  # clipped at the model's size


def check_mask_values(mask_values: str) -> None:
    if mask_values not in MASK_VALUES:
        raise BadInput(f"BEN2 mask_values must be one of {', '.join(MASK_VALUES)}, got {mask_values!r}")


def postprocess(prob: np.ndarray, width: int, height: int, *, mask_values: str = "normalized") -> np.ndarray:
    """Network output (any leading singleton dims) → ``height×width`` float32 alpha in 0..1.

    ``mask_values``: ``normalized`` (min-max stretched, as BEN2's runner does) or ``raw``.
    """
    check_mask_values(mask_values)
    plane = np.asarray(prob, dtype=np.float32).reshape(prob.shape[-2:])
    if mask_values == "normalized":
        low, high = float(plane.min()), float(plane.max())
        if high - low > FLAT_EPSILON:
            plane = (plane - low) / (high - low)
    return np.clip(imageops.resize_plane(plane, width, height), 0.0, 1.0)


@dataclass
class Ben2:
    """A loaded BEN2 session. Create with :meth:`load`; free with :meth:`close`."""

    session: object
    path: Path
    provider: str
    input_name: str
    input_size: int

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        provider: str = "CPU",
        threads: int | None = None,
        mem_arena: bool = False,
        mem_pattern: bool = False,
        optimization: str | None = None,
    ) -> "Ben2":
        """``optimization``: onnxruntime's graph optimisation level; by default ``basic`` on the CPU
        (on BEN2's real architecture at 1024², ``all`` — which adds the CPU's blocked-layout
        transforms — peaked at 3.78 GiB against 2.75 GiB for ``basic``, with the same output and
        no measurable gain in time on a 2-core AVX2 machine: ``python -m devtools.bench.ben2_session_options
        --model``), ``all`` on CUDA."""
        path = Path(path)
        if optimization is None:
            optimization = "basic" if provider == "CPU" else "all"
        session = create_session(
            path, provider=provider, label="BEN2", threads=threads, mem_arena=mem_arena, mem_pattern=mem_pattern,
            optimization=optimization,
        )
        inputs = session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(inputs) != 1 or len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelCorrupt(
                f"BEN2: {path} does not look like a BEN2 model (inputs {[(i.name, i.shape) for i in inputs]}, "
                "expected one [1,3,1024,1024] image input) — choose BEN2_Base.onnx"
            )
        size = shape[2] if isinstance(shape[2], int) and shape[2] > 0 else INPUT_SIZE
        return cls(session=session, path=path, provider=provider, input_name=inputs[0].name, input_size=size)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a pre-processed ``[1,3,S,S]`` tensor; the raw float32 probability map."""
        if self.session is None:
            raise RuntimeError("BEN2 session is closed")
        output = self.session.run(None, {self.input_name: tensor})[0]
        return np.asarray(output, dtype=np.float32)

    def matte(self, rgb: np.ndarray, *, mask_values: str = "normalized") -> np.ndarray:
        """``H×W×3`` float 0..1 RGB → ``H×W`` float32 alpha (1 = subject)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise BadInput(f"BEN2 expects an H×W×3 RGB image, got shape {rgb.shape}")
        check_mask_values(mask_values)
        height, width = rgb.shape[:2]
        prob = self.infer(preprocess(rgb, self.input_size))
        return postprocess(prob, width, height, mask_values=mask_values)

    def close(self) -> None:
        self.session = None
