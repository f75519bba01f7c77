#!/usr/bin/env bash
# Set up a fresh machine for strom: Debian packages, a virtualenv in .venv, strom and its extras.
# Usage: scripts/setup.sh [--dev]   (--dev adds what the tests need)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

apt_install() {
    local sudo=""
    [[ "$(id -u)" != 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

if ((dev)); then
    # kcat: the librdkafka command-line client, one of the unmodified clients the tests run.
    missing=()
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    # PostgreSQL's server (initdb, pg_ctl): the PostgreSQL connector tests start their own.
    # Debian keeps it in /usr/lib/postgresql/<version>/bin, off PATH.
    pg_found=0
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && pg_found=1
    for pg_bin in /usr/lib/postgresql/*/bin; do
        [[ -x $pg_bin/initdb && -x $pg_bin/pg_ctl ]] && pg_found=1
    done
    ((pg_found)) || missing+=(postgresql)
    # Java: the Spark backend's tests run PySpark in local mode (they skip, saying so, without).
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    if ((${#missing[@]})); then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ((dev)); then
    .venv/bin/python -m pip install -q -e '.[dev]'
else  # the ml extra: `strom demo` (README's first command) trains and scores models
    .venv/bin/python -m pip install -q -e '.[ml]'
fi
echo "setup: ready ($(.venv/bin/strom --version))"
