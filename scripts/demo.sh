#!/usr/bin/env bash
# README's first command: install everything and run the main jobs: `strom demo iot` (the IoT
# scenario: broker, streaming windows, SQLite) and `strom demo` (the real-time ML loop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/strom demo iot
exec .venv/bin/strom demo "$@"
