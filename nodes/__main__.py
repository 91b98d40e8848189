"""``python -m cutout_guard``: the ``cutout-guard`` command line."""

import sys

from .app.cli import main

sys.exit(main())
