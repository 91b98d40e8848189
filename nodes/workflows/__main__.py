"""``python -m cutout_guard.workflows [ROOT]``: rewrite the generated workflow files under ROOT.

ROOT defaults to the checkout this package is in (the folder holding ``nodes/`` and
``pyproject.toml``); an installed package is in no checkout, so there ROOT must be given.
"""

import argparse
import logging
import sys
from pathlib import Path

from .render import expected_files, write_all

log = logging.getLogger("cutout_guard.workflows")


def checkout_root() -> Path | None:
    """The source checkout around this package, or None when the package is installed."""
    package = Path(__file__).resolve().parents[1]
    root = package.parent
    if package.name == "nodes" and (root / "pyproject.toml").is_file():
        return root
    return None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m cutout_guard.workflows", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path,
                        help="folder to write into (default: the checkout this package is in)")
    args = parser.parse_args(argv)
    root = args.root or checkout_root()
    if root is None:
        parser.error("this package is installed, not in a checkout: name the folder to write the workflows "
                     f"into ({len(expected_files())} files under workflows_cpu/, workflows_gpu/, ...)")
    for path in write_all(root):
        log.info("wrote %s", path.relative_to(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
