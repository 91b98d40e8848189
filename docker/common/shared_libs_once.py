#!/usr/bin/env python3
"""Stores each shared library of an installed distribution once: copies become symbolic links.

A wheel cannot hold symbolic links, so a CMake-built wheel carries each library under every one
of its names (``libllama.so``, ``libllama.so.0``, ``libllama.so.0.5.0``), and llama-cpp-python
0.3.x installs that set twice (``llama_cpp/lib/`` and site-packages' ``lib/``): six copies of
every library, the CUDA kernels among them on a GPU image. Run right after pip installs the
wheel, in the same image layer. Shared libraries of the distribution (from its RECORD) with the
same content become relative links to one of them — the one inside the distribution's own
package, with the most specific name — so every path still loads the same code; RECORD lists
the links without a hash, as it does for files it cannot vouch for. Running it again changes
nothing.

    python shared_libs_once.py llama-cpp-python [--path SITE_PACKAGES]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata as md
import io
import os
import re
import sys
from pathlib import Path

LIBRARY = re.compile(r"\.so(\.\d+)*$")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _packages(dist: md.Distribution) -> set[str]:
    """Top-level folders that are the distribution's own Python packages."""
    names = (dist.read_text("top_level.txt") or "").split()
    if not names:
        names = [str(f).split("/")[0] for f in dist.files or [] if str(f).endswith("/__init__.py") and str(f).count("/") == 1]
    return set(names)


def _keeper(paths: list[str], packages: set[str]) -> str:
    """The copy to keep: inside the package first, then the longest (most versioned) name."""
    return sorted(paths, key=lambda p: (p.split("/")[0] not in packages, -len(Path(p).name), p))[0]


def store_once(dist: md.Distribution) -> tuple[int, int]:
    """Replace duplicate shared libraries of ``dist`` by links; (links made, bytes saved)."""
    groups: dict[tuple[int, str], list[str]] = {}
    for entry in dist.files or []:
        rel = str(entry)
        path = Path(dist.locate_file(entry))
        if not LIBRARY.search(path.name) or path.is_symlink() or not path.is_file():
            continue
        groups.setdefault((path.stat().st_size, _digest(path)), []).append(rel)
    packages = _packages(dist)
    linked, saved = [], 0
    for (size, _), rels in groups.items():
        if len(rels) < 2:
            continue
        keep = Path(dist.locate_file(_keeper(rels, packages)))
        for rel in rels:
            path = Path(dist.locate_file(rel))
            if path == keep:
                continue
            path.unlink()
            path.symlink_to(os.path.relpath(keep, path.parent))
            linked.append(rel)
            saved += size
    if linked:
        _unhash(dist, set(linked))
    return len(linked), saved


def _unhash(dist: md.Distribution, rels: set[str]) -> None:
    record = next(Path(dist.locate_file(f)) for f in dist.files if str(f).endswith(".dist-info/RECORD"))
    rows = list(csv.reader(io.StringIO(record.read_text())))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row[0], "", ""] if row and row[0] in rels else row)
    record.write_text(out.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("distribution")
    parser.add_argument("--path", help="the site-packages folder (default: this Python's)")
    args = parser.parse_args(argv)
    found = list(md.distributions(name=args.distribution, path=[args.path] if args.path else sys.path))
    if not found:
        print(f"shared_libs_once: {args.distribution} is not installed", file=sys.stderr)
        return 1
    links, saved = store_once(found[0])
    print(f"shared_libs_once: {args.distribution}: {links} duplicate libraries replaced by links ({saved / 2**20:.1f} MiB saved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
