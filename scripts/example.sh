#!/usr/bin/env bash
# The main job on the built-in example: make a synthetic embryo, track it with the bundled model,
# score it against its ground truth and open the result in napari (or pass --headless).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh all
exec .venv/bin/cellect demo cellect-demo "$@"
