#!/usr/bin/env bash
# Install napari-cellect with its test extras into .venv and run the whole test suite.
# GUI tests run under Xvfb (pytest-xvfb starts it). Without Xvfb, as root on a system with
# apt-get, the GUI's system packages are installed first (scripts/install-gui-deps.sh); where
# that is not possible the GUI tests are skipped with one line saying why (tests/conftest.py).
# Without pytest arguments (the whole suite, as CI runs it) the static checks run first
# (scripts/static-checks.sh: ruff and mypy); CELLECT_STATIC_CHECKS=1 runs them with arguments too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh testing
if ! command -v Xvfb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
then
  echo "test.sh: installing Xvfb and Qt's X libraries for the GUI tests (apt-get)"
  bash scripts/install-gui-deps.sh || echo "test.sh: apt-get failed; GUI tests will be skipped"
fi
if [ $# -eq 0 ] || [ "${CELLECT_STATIC_CHECKS:-0}" = 1 ]; then
  bash scripts/static-checks.sh
fi
exec .venv/bin/python -m pytest "$@"
