"""Each peer lives in its own virtualenv, created on demand from PyPI with pinned versions.

The peers pin libraries strom also uses (Quix Streams wants confluent-kafka < 2.13, PyFlink an
old pyarrow and pandas), so none of them is installed into strom's environment. The venvs live
under ``$STROM_BENCH_CACHE`` (default ``~/.cache/strom-bench``), outside the repository, in
``venvs/<name>-<version>``; a venv is marked ready only once its install and an import check
succeed, so a half-built one is rebuilt, never used.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VenvSpec", "cache_dir", "ensure_venv"]


@dataclass(frozen=True)
class VenvSpec:
    name: str
    version: str
    requirements: tuple[str, ...]
    check: str
    """A module the venv must import once installed."""

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class Venv:
    python: Path
    created_s: float | None
    """Seconds the install took, when this call created it (None: it was already there)."""


def cache_dir() -> Path:
    root = os.environ.get("STROM_BENCH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "strom-bench"


def _last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip() and not x.startswith("WARNING")]
    return lines[-1][:300] if lines else "no output"


def ensure_venv(spec: VenvSpec, timeout_s: float = 1200) -> Venv | str:
    """The venv's Python, creating the venv first if needed; a reason string when it cannot be
    created (offline, no wheel for this platform, ...)."""
    root = cache_dir() / "venvs"
    target = root / spec.dirname
    python = target / "bin" / "python"
    ready = target / ".strom-ready"
    if ready.exists():
        return Venv(python, None)
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{spec.dirname}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be creating the same venv
        if ready.exists():
            return Venv(python, None)
        shutil.rmtree(target, ignore_errors=True)  # a half-built one from an interrupted run
        started = time.perf_counter()
        steps = [
            [sys.executable, "-m", "venv", str(target)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "--timeout",
                "30",
                "--retries",
                "1",
                *spec.requirements,
            ],
            [str(python), "-c", f"import {spec.check}"],
        ]
        for argv in steps:
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
            except (OSError, subprocess.TimeoutExpired) as exc:
                shutil.rmtree(target, ignore_errors=True)
                return f"cannot create its virtualenv: {exc}"
            if done.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                return (
                    f"cannot create its virtualenv ({' '.join(spec.requirements)} from PyPI): "
                    f"{_last_line(done.stderr or done.stdout)}"
                )
        ready.write_text(" ".join(spec.requirements) + "\n")
        return Venv(python, time.perf_counter() - started)
