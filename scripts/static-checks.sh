#!/usr/bin/env bash
# Static checks: ruff's lint rules, ruff's formatter (--check) and mypy on the core (settings in pyproject.toml).
# Run by scripts/test.sh before the whole suite; fails fast, saying which check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if ! "$py" -m ruff check src tests benchmarks examples scripts; then
  echo "static-checks.sh: ruff found problems (above); 'ruff check --fix' fixes the safe ones" >&2
  exit 1
fi
if ! "$py" -m ruff format --check src tests benchmarks examples scripts; then
  echo "static-checks.sh: files not formatted (above); 'ruff format' formats them" >&2
  exit 1
fi
if ! "$py" -m mypy; then
  echo "static-checks.sh: mypy found type errors in the core (above)" >&2
  exit 1
fi
