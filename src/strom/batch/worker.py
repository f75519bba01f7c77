"""A worker process: receives tasks over its pipe, runs them, answers with the outcome.

Started by the driver with the ``spawn`` method (a fresh interpreter: no Polars thread pool is
forked). It reads the jobs once, from a cloudpickle file the driver wrote (so functions defined in a
pipeline file travel by value), then loops: ``(job index, task, attempt, context)`` in, one
:data:`Reply` out. It ends when the driver sends ``None`` or its end of the pipe closes (the
driver is gone), so a worker never outlives its driver for longer than the task it is running.
"""

from __future__ import annotations

import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from strom.batch.execute import BadFile, LostShuffle, run_task
from strom.batch.memory import resident
from strom.batch.planner import JobSpec

Reply = tuple[Any, ...]
"""``("ok", TaskResult)``, ``("bad_file", path, reason)``, ``("lost", [paths])`` or
``("error", message, traceback)``."""


def worker_main(conn: Connection, jobs_file: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when a run stops
    with open(jobs_file, "rb") as f:
        jobs: dict[int, JobSpec] = cloudpickle.load(f)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_index, task, attempt, context = message
        reply: Reply
        try:
            result = run_task(jobs[job_index], task, attempt, context)
            result.resident = resident(os.getpid())
            reply = ("ok", result)
        except BadFile as exc:
            reply = ("bad_file", exc.path, exc.reason)
        except LostShuffle as exc:
            reply = ("lost", exc.paths)
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
