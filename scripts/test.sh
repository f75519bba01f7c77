#!/usr/bin/env bash
# README's second command: install everything, then lint (ruff), type-check (mypy) and run every
# test. Extra arguments go to pytest (e.g. --run-slow for the soak and crash tests in full).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy
exec .venv/bin/pytest "$@"
