"""Running one peer child process: timeout, process-group kill, CPU from the kernel."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChildResult", "run_child"]


@dataclass(frozen=True)
class ChildResult:
    returncode: int | None
    """None when the child ran out of time and was killed."""
    wall_s: float
    cpu_s: float
    """User + system CPU of the child and the descendants it waited for."""
    stderr_tail: str


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [x.strip() for x in text.strip().splitlines() if x.strip() and "Warning" not in x]
    # a Java stack trace ends in frames; its root cause is the last "Caused by:" line
    causes = [x for x in kept if x.startswith("Caused by:")]
    errors = [x for x in kept if "Error" in x or "Exception" in x]
    if causes or errors:
        return (causes or errors)[-1][:500]
    return " | ".join(x[:300] for x in kept[-lines:])


def run_child(argv: list[str], cwd: Path, timeout_s: float) -> ChildResult:
    """Runs ``argv`` in its own session; at ``timeout_s`` the whole session is killed (a JVM
    the child started included)."""
    stdout, stderr = cwd / "child.stdout", cwd / "child.stderr"
    started = time.perf_counter()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = started + timeout_s
    status: int | None = None
    while True:
        pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status = os.waitstatus_to_exitcode(wait_status)
            break
        if time.perf_counter() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _, _, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = -1 if status is None else status  # reaped here; keep Popen quiet
    # the session may hold orphans (a JVM not waited for); none may outlive the run
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return ChildResult(
        returncode=status,
        wall_s=time.perf_counter() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        stderr_tail=_tail(stderr),
    )
