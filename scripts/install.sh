#!/usr/bin/env bash
# Create .venv (if needed) and install napari-cellect into it with the given extras.
# Usage: bash scripts/install.sh [EXTRAS]   e.g. "testing" or "all"
# Without an NVIDIA GPU we pin torch==2.13.0, the CPU wheel these machines carry (an unpinned torch
# would pull a multi-GB CUDA build); with a GPU, pip picks the CUDA build of torch as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
python3 -m venv .venv
py=.venv/bin/python
"$py" -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "$py" -m pip install -q "torch==2.13.0" || "$py" -m pip install -q torch
fi
"$py" -m pip install -q -e ".[${extras}]"
