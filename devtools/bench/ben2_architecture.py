"""BEN2's real architecture as an ONNX graph with random weights, built from a ``BEN2.py`` the user
fetched (PramaLLC/BEN2, MIT) — read at run time, never copied into this repository.

    python -m devtools.bench.ben2_architecture --ben2-code BEN2.py --out ben2-arch.onnx

The network class ``BEN_Base`` is instantiated with random weights (seeded) and exported the way
a user's BEN2_Base.onnx looks: one input ``input`` float32 [1,3,1024,1024], one output
[1,1,1024,1024]; the weights go to ``<out>.data`` beside the graph. What ``BEN2.py`` imports for
its own image loading and training (timm's layers, torchvision's transforms, cv2) is replaced,
during the import only, by the few stand-ins the network itself uses: ``DropPath`` is the identity
in evaluation, ``to_2tuple`` and ``trunc_normal_`` are what their names say. The decorators on
``forward`` (inference mode, CUDA autocast) are unwrapped, so the export traces the plain network
in float32. Needs torch, onnx, onnxscript and einops (about a minute and 1 GiB of memory).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import sys
import types
from pathlib import Path

INPUT_SIZE = 1024
STUBBED = ("timm", "timm.layers", "torchvision", "torchvision.transforms", "cv2")


def _stand_in_modules() -> dict[str, types.ModuleType]:
    import torch.nn as nn

    class Identity(nn.Module):  # DropPath: stochastic depth is off in evaluation
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x):
            return x

    def pair(value):
        return value if isinstance(value, tuple) else (value, value)

    layers = types.ModuleType("timm.layers")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = Identity, pair, nn.init.trunc_normal_
    timm = types.ModuleType("timm")
    timm.layers = layers

    class NoTransform:  # any torchvision transform class: image loading is not part of the network
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, value):
            return value

    def transform(name: str):
        if name[:1].isupper():
            return NoTransform
        raise AttributeError(name)

    transforms = types.ModuleType("torchvision.transforms")
    transforms.__getattr__ = transform
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms
    return {"timm": timm, "timm.layers": layers, "torchvision": torchvision, "torchvision.transforms": transforms,
            "cv2": types.ModuleType("cv2")}


@contextlib.contextmanager
def _stand_ins():
    """The stand-in modules in ``sys.modules`` while ``BEN2.py`` is imported; what was there before, after."""
    saved = {name: sys.modules.get(name) for name in STUBBED}
    sys.modules.update(_stand_in_modules())
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_network(ben2_code: Path, *, seed: int = 0):
    """``BEN_Base`` of ``ben2_code`` with random weights, in evaluation mode, its ``forward`` unwrapped."""
    import torch

    spec = importlib.util.spec_from_file_location("cutout_guard_bench_ben2", ben2_code)
    module = importlib.util.module_from_spec(spec)
    with _stand_ins():
        spec.loader.exec_module(module)
    if not hasattr(module, "BEN_Base"):
        raise SystemExit(f"--ben2-code {ben2_code}: no class BEN_Base in it — give BEN2.py of PramaLLC/BEN2")
    torch.manual_seed(seed)
    network = module.BEN_Base().eval()
    forward = type(network).forward
    while hasattr(forward, "__wrapped__"):
        forward = forward.__wrapped__
    network.forward = types.MethodType(forward, network)
    return network


def cached_path(cache: Path, ben2_code: Path) -> Path:
    """Where the graph built from this exact ``BEN2.py`` is kept (its content's hash in the name)."""
    digest = hashlib.sha256(Path(ben2_code).read_bytes()).hexdigest()[:12]
    return Path(cache) / f"ben2-architecture-{digest}.onnx"


def build_ben2_architecture(ben2_code: str | Path, target: str | Path, *, seed: int = 0, size: int = INPUT_SIZE) -> Path:
    """Export the random-weight network to ``target`` (and ``target.data``) unless it is there."""
    import torch

    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    network = load_network(Path(ben2_code), seed=seed)
    partial = target.with_name(target.stem + ".partial.onnx")
    with torch.no_grad():
        torch.onnx.export(network, (torch.rand(1, 3, size, size),), str(partial), dynamo=True, input_names=["input"],
                          output_names=["output"], external_data=True)
    _rename_with_data(partial, target)
    _write_flops(network, target, size)
    return target


def _write_flops(network, target: Path, size: int) -> None:
    """Count the network's FLOP once (torch's counter: 2 per multiply-add of its matrix products and
    convolutions) and keep it beside the graph as ``<graph>.flops`` for the benchmark's rate."""
    import json

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(torch.rand(1, 3, size, size))
    Path(str(target) + ".flops").write_text(json.dumps({"flops": int(counter.get_total_flops())}))


def _rename_with_data(partial: Path, target: Path) -> None:
    """Move the exported graph and its weights into place; the graph names its data file, so it is rewritten."""
    import onnx

    model = onnx.load(str(partial))  # loads the external weights too
    onnx.save(model, str(target), save_as_external_data=True, location=target.name + ".data")
    partial.unlink()
    partial.with_name(partial.name + ".data").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.ben2_architecture", description=__doc__.splitlines()[0])
    parser.add_argument("--ben2-code", required=True, metavar="BEN2.py", help="BEN2.py of PramaLLC/BEN2, fetched by you")
    parser.add_argument("--out", required=True, help="the .onnx to write (its weights go to <out>.data)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_ben2_architecture(args.ben2_code, args.out, seed=args.seed)
    print(f"wrote {path} (random weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
