#!/bin/sh
# The CUDA checks in one command (benchmarks/gpu_check.py): under 8 minutes on one GPU; "no CUDA: skipped" elsewhere.
# PYTHON picks the interpreter (default: python). Arguments pass through (--plan, --rehearse).
cd "$(dirname "$0")/.." && exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
