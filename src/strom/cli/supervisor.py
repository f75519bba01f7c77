"""``strom run --workers N``: start N worker processes and watch over them.

Each child is ``strom run FILE --workers N --worker-index i --run-id R`` (what a user runs by
hand on each of N machines), started in its own session so a terminal's Ctrl-C reaches only the
parent, which forwards one SIGTERM to every worker: each then closes its sinks and prints its
metrics. If a worker dies, the others cannot finish (its partitions and keys have no one else,
and the watermark downstream waits for it), so the parent stops them and exits non-zero naming
the worker; with checkpoints (``restarts`` > 0) it restarts the dead worker instead, the same
command, which resumes from its last checkpoint while the others run on, until the restarts are
used up (with a back-off; never for a worker that failed before it ran, which exits with
:data:`EXIT_NO_RESTART`). Worker log lines are relayed prefixed with ``[worker i]``; their
metrics print at the end, one worker after another.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

import click

from strom.cli.signals import stop_on_signals

__all__ = ["EXIT_NO_RESTART", "restart_delay", "supervise"]

#: How long stopped workers get to close their sinks before they are killed.
STOP_GRACE_S = 30.0
#: A worker's exit status for a failure before it ran (an invalid plan, refused sinks, another
#: pipeline's checkpoints): starting it again would fail the same way, so it is not restarted.
EXIT_NO_RESTART = 3


def restart_delay(recent: int) -> float:
    """How long to wait before restarting a worker restarted ``recent`` times in the last
    30 s: 0.1 s, doubling with each, at most 5 s (a worker failing at once, e.g. while its
    broker is down, does not spin)."""
    return float(min(0.1 * 2**recent, 5.0))


class _Child:
    def __init__(self, index: int, command: Sequence[str]) -> None:
        self.index = index
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr_tail: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._collect, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._relay, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _collect(self, stream: IO[str]) -> None:
        for line in stream:
            self.stdout.append(line)

    def _relay(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr_tail = [*self.stderr_tail[-19:], line.rstrip("\n")]
            click.echo(f"[worker {self.index}] {line.rstrip()}", err=True)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def join_output(self) -> None:
        for t in self._threads:
            t.join(timeout=5)

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"


def supervise(
    commands: Sequence[Sequence[str]],
    poll_s: float = 0.05,
    *,
    restarts: int = 0,
    max_seconds: float | None = None,
) -> str:
    """Run one child per command until all exit; returns how the run ended. A child that
    fails is started again, after a back-off (:func:`restart_delay`), while ``restarts`` (over
    all children) remain, unless it exited with :data:`EXIT_NO_RESTART` (it failed before
    running: an invalid plan, refused sinks, another pipeline's checkpoints). After
    ``max_seconds`` every child is stopped (a restarted one too).

    Raises :class:`click.ClickException` if any worker failed for good (after stopping the
    others).
    """
    children = [_Child(i, cmd) for i, cmd in enumerate(commands)]
    restarted: list[list[float]] = [[] for _ in commands]  # when each child was restarted
    pending: dict[int, float] = {}  # child -> when to start it again
    stop: list[str] = []
    failure: str | None = None
    failed = 0
    stopped_at: float | None = None
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        with stop_on_signals(lambda sig: stop.append(f"{sig.name} received")):
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline and not stop:
                    stop.append(f"--max-seconds {max_seconds:g} reached")
                if stop and stopped_at is None:
                    stopped_at = now
                    pending.clear()
                    for child in children:
                        child.signal(signal.SIGTERM)
                for index, at in list(pending.items()):
                    if now >= at:
                        del pending[index]
                        children[index] = _Child(index, commands[index])
                for child in children:
                    if child.index in pending:
                        continue
                    code = child.proc.poll()
                    ours = stopped_at is not None and code == -signal.SIGTERM  # not started yet
                    failed_now = code is not None and code != 0 and not ours
                    retry = failed_now and stopped_at is None and code != EXIT_NO_RESTART
                    if retry and restarts > 0:
                        restarts -= 1
                        recent = [t for t in restarted[child.index] if now - t < 30.0]
                        delay = restart_delay(len(recent))
                        restarted[child.index] = [*recent, now]
                        pending[child.index] = now + delay
                        click.echo(
                            f"worker {child.index} of {len(children)} {child.describe_exit()}; "
                            f"restarting it from its last checkpoint in {delay:.1f} s "
                            f"({restarts} restart(s) left)",
                            err=True,
                        )
                        child.join_output()
                        continue
                    if failure is None and failed_now:
                        failure = (
                            f"worker {child.index} of {len(children)} {child.describe_exit()}; "
                            "stopping the others (its partitions and keys have no other worker)"
                        )
                        failed = child.index
                        click.echo(failure, err=True)
                        stop.append("a worker failed")
                if not pending and all(c.proc.poll() is not None for c in children):
                    break
                if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_S:
                    for child in children:
                        child.signal(signal.SIGKILL)
                time.sleep(poll_s)
    finally:
        for child in children:  # only reached early by an exception of our own
            child.signal(signal.SIGKILL)
            child.proc.wait()
            child.join_output()
    for child in children:
        click.echo(f"worker {child.index} of {len(children)}: {child.describe_exit()}")
        sys.stdout.write("".join(child.stdout))
    if failure is not None:
        last = children[failed].stderr_tail[-5:]
        detail = ("; its last lines:\n  " + "\n  ".join(last)) if last else ""
        raise click.ClickException(failure + detail)
    return f"stopped: {stop[0]}" if stop else "every worker finished"
