"""``python -m cutout_guard.workflows [ROOT]``: rewrite the workflow files under ROOT (default: the repo)."""

import sys
from pathlib import Path

from .render import write_all

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
for path in write_all(root):
    print(f"wrote {path.relative_to(root)}")
