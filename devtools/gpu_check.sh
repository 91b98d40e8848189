#!/bin/sh
# The GPU check (devtools/gpu_check.py): run from anywhere in a checkout; PYTHON picks the interpreter.
# Exit 0: every check passed; 1: a check failed; 2: this machine has no NVIDIA GPU.
cd "$(dirname "$0")/.." || exit 1
exec "${PYTHON:-python3}" -m devtools.gpu_check "$@"
