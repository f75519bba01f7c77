#!/usr/bin/env bash
# README's first command: install everything and run the main job, `strom demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/strom demo "$@"
