#!/usr/bin/env bash
# Install napari-cellect with its test extras into .venv and run the whole test suite.
# GUI tests run under Xvfb (pytest-xvfb starts it); .ci/run installs the system packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh testing
exec .venv/bin/python -m pytest "$@"
