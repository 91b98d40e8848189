"""The CPU/GPU comparison table: each stage and the whole pipeline per image, cold load, peak memory, cost.

Same as ``cutout-guard bench``; models of the real shapes with random weights are built on the
first run (see ``nodes/bench.py``).

    python bench/pipeline.py                     # Llama Guard 1B shape, CPU (and CUDA when usable)
    python bench/pipeline.py --guard 8b --repack # the 8B shape, plus llama.cpp's repacking on/off
    python bench/pipeline.py --json
"""

from __future__ import annotations

import sys

from cutout_guard.bench import main

if __name__ == "__main__":
    sys.exit(main())
