"""The import rules of nodes/ARCHITECTURE.md, read from the code itself (every import, also inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nodes"
LAYERS = ("core", "engines", "comfyui", "app", "router", "install", "workflows")
RUNTIMES = ("onnxruntime", "torch", "transformers", "llama_cpp", "tokenizers", "safetensors")
COMFYUI = ("comfy", "folder_paths", "server", "execution", "comfy_extras", "comfy_api", "nodes")

# layer -> the pack's layers it may import (the root package only for its mappings)
ALLOWED = {
    "core": {"core"},
    "engines": {"core", "engines"},
    "comfyui": {"core", "engines", "comfyui"},
    "app": {"core", "engines", "router", "app"},
    "router": {"core", "router"},
    "install": {"core", "install"},
    "workflows": {"core", "comfyui", "workflows", ""},
}
# The one bridge to the developer tools: `cutout-guard bench` imports them from a checkout and
# says how to get them when they are absent (tests/test_cli.py checks that message).
DEVTOOLS_BRIDGE = {"app/cli.py"}
MAY_IMPORT_RUNTIME = {"engines": None, "comfyui": {"torch"}}  # None: any (each engine its one runtime)


def _module_name(path: Path, package: Path) -> tuple[str, ...]:
    parts = path.relative_to(package).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a file; the pack's own as 'cutout_guard.…'."""
    name = _module_name(path, package)
    package = name if path.name == "__init__.py" else name[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(("cutout_guard", *base, *([node.module] if node.module else [])))
                if node.module is None:  # from . import a, b: each name may be a module
                    found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
                    continue
                found.append((target, node.lineno))
            else:
                found.append((node.module, node.lineno))
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def _files():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    loose = [str(p.relative_to(PACKAGE)) for p in _files() if len(p.relative_to(PACKAGE).parts) == 1 and p.name not in ("__init__.py", "__main__.py")]
    assert loose == [], "modules outside a layer folder"


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    """Every import in ``path`` that breaks a rule of ARCHITECTURE.md, as readable lines."""
    rel = path.relative_to(package)
    layer = rel.parts[0] if len(rel.parts) > 1 else ""
    broken = []
    for module, line in imports(path, package):
        top = module.split(".")[0]
        where = f"{rel}:{line} imports {module}"
        if top == "devtools" and str(rel) not in DEVTOOLS_BRIDGE:
            broken.append(f"{where} (devtools never ships)")
        if not layer:  # the root package: mappings and the CLI entry
            continue
        if top == "cutout_guard":
            target = _layer(module)
            if target not in ALLOWED[layer]:
                broken.append(f"{where} ({layer} may import {sorted(ALLOWED[layer])})")
        elif top in COMFYUI and layer != "comfyui":
            broken.append(f"{where} (only comfyui/ touches ComfyUI)")
        elif top in RUNTIMES:
            allowed = MAY_IMPORT_RUNTIME.get(layer, set())
            if allowed is not None and top not in allowed:
                broken.append(f"{where} (runtimes belong to engines)")
    return broken


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    assert violations(path) == []


def test_the_rule_checker_catches_a_broken_rule(tmp_path):
    """The checker itself: a core module importing ComfyUI, an engine and a runtime is reported."""
    (tmp_path / "core").mkdir()
    bad = tmp_path / "core" / "bad.py"
    bad.write_text("import folder_paths\nfrom ..engines import ben2\n\ndef f():\n    import onnxruntime\n    import devtools\n")
    found = "\n".join(violations(bad, tmp_path))
    for name in ("folder_paths", "cutout_guard.engines", "onnxruntime", "devtools"):
        assert f"imports {name} " in found, found


def test_architecture_map_names_every_layer():
    text = (PACKAGE / "ARCHITECTURE.md").read_text()
    for layer in LAYERS:
        assert f"{layer}/" in text, layer
        assert (PACKAGE / layer / "__init__.py").is_file(), layer
