"""The names and choices every layer shares: one word for one thing.

The node input, the engine keyword, the command-line flag (``--snake-case`` of the same word),
the workflow JSON and the report field all use the words below. ``nodes/ARCHITECTURE.md`` lists
them with their meaning and the old names that still work.
"""

from __future__ import annotations

# --- model kinds: install.py --models, `cutout-guard download`, core/models.py, error messages
MODEL_KINDS = ("ben2", "florence2", "llama_guard", "image_guard")

# --- where each engine runs (the three inputs that differ between the CPU and GPU workflows)
PROVIDERS = ("CPU", "CUDA")  # BEN2 `provider`: onnxruntime's execution provider
PRECISIONS = ("fp32", "fp16", "bf16")  # Florence-2 and image guard `precision`
# Llama Guard `n_gpu_layers`: an int, 0 = CPU only, -1 = every layer on the GPU

# `device`: the torch device Florence-2 and the image guard run on; "default" = ComfyUI's device (in ComfyUI only)
DEVICES = ("default", "cpu", "cuda")

# `preset`: the command line's set of the three settings (`cutout-guard run --preset`)
PRESETS = {
    "cpu": {"provider": "CPU", "precision": "fp32", "n_gpu_layers": 0, "device": "cpu"},
    "cuda": {"provider": "CUDA", "precision": "fp16", "n_gpu_layers": -1, "device": "cuda"},
}

# `build`: which runtime builds install.py installs (onnxruntime / llama-cpp-python)
BUILDS = ("auto", "cpu", "cuda")

# `threads`: CPU threads, on every loader and the command line; 0 = automatic
DEFAULT_THREADS = 0

# --- Remove Background (BEN2)
BACKGROUNDS = ("transparent", "color")  # `background`: what replaces the background
MASK_VALUES = ("normalized", "raw")  # `mask_values`: min-max stretched (BEN2's runner) or raw probabilities
DEFAULT_COLOR = "#FFFFFF"  # `color`: the colour behind transparent pixels (Remove Background, Caption)

# --- Caption (Florence-2)
CAPTION_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")  # `task`

# --- Safety Check (Llama Guard)
ALL_CATEGORIES = "all"  # `policy`: the hazard categories that count, "all" or codes like "S1,S10-S12"
DEFAULT_THRESHOLD = 0.5  # `threshold`: unsafe when p_unsafe >= threshold
# `categories` (an output and a report field): the violated categories that count under the policy

# --- Save Cutout Report, `cutout-guard run`
UNSAFE_ACTIONS = ("keep", "blur", "withhold")  # `unsafe_action`
STAGES = ("cutout", "image_check", "caption", "safety_check")  # keys of the report's `seconds`, in run order

# What finishes an install that could not get llama-cpp-python (install.py's warning and the Llama
# Guard nodes' error say the same), and how long that source build takes on 2 cores (measured).
LLAMA_SOURCE_COMMAND = "python install.py --llama-source"
LLAMA_SOURCE_BUILD_MINUTES = "15–25"
