"""Broadcast joins: a join input small enough is read whole by every task of the other input.

A shuffled join writes both inputs to shuffle files and joins them per bucket in reduce tasks.
When one input's files (an earlier stage's results or a file source's files) hold at most
:func:`limit` bytes, the driver instead runs the stage as map tasks over the other input only,
each reading the small input's files whole (:class:`Broadcast`, part of every task's context)
and joining its own rows with all of them; its output is the stage's result, committed per task
like a reduce task's. No shuffle files, no reduce tasks.

It gives the shuffled join's rows: every row of the streamed input is in exactly one task and
meets every row of the broadcast input, so each of its matches (and, for left and anti joins,
its being unmatched) is found once. That is why only the right input of a left, semi or anti
join can be broadcast (a left row seen by every task would be emitted unmatched by each), and
either input of an inner join. The row order is each task's (the streamed rows' order, tasks in
order): a join's results have no promised order (:mod:`strom.batch.planner`).

Retry is unchanged: the broadcast files are inputs of every task, so a task that finds one of an
earlier stage's result files gone or torn sends its writer back to run (lineage), and a bad
file of a file source is found, failed or skipped as the task's own files are (every task skips
the same file; the driver reports it once).
"""

from __future__ import annotations

from dataclasses import dataclass

from strom.batch.memory import MIB, PROCESS_BASE, Budget

BROADCAST_BYTES = 128 * MIB
"""The largest input (bytes of its files) that is broadcast by default
(``run_local(broadcast=...)``): TPC-H SF10's Q5 joins its 2,600 MiB of lineitem with 69 MiB of
filtered orders; broadcasting them instead of shuffling 62 M lineitem rows took the query from
27 s to 8 s (2 workers, ``--memory 4GiB``)."""


@dataclass(frozen=True)
class Broadcast:
    """The join input every map task of a stage reads whole: ``side`` (0 left, 1 right), and
    each of its branches' files, as (branch index in the stage, paths in order)."""

    side: int
    branches: tuple[tuple[int, tuple[str, ...]], ...]


def limit(budget: Budget, most: int = BROADCAST_BYTES) -> int:
    """The most bytes of files broadcast under ``budget``: ``most``, or less, so that a map
    task holds its own files and the broadcast input within its worker's working memory. A
    task's own files take up to a quarter of it once decoded (:class:`~strom.batch.memory.Budget`);
    the broadcast rows and their hash table take ~3x their files' bytes (Arrow IPC results;
    a file source's Parquet is read for the pruned columns only), so a sixteenth of it keeps
    both under ~half. 0: never."""
    return max(0, min(most, (budget.per_worker - PROCESS_BASE) // 16))


def choose(how: str, left_bytes: int, right_bytes: int, most: int) -> int | None:
    """The side to broadcast (0 left, 1 right), or None to shuffle both: the right input if it
    holds at most ``most`` bytes; for an inner join, else the left one if it does (the smaller
    of the two if both are small). ``most`` 0: never."""
    if most <= 0:
        return None
    right = right_bytes <= most
    left = how == "inner" and left_bytes <= most
    if right and (not left or right_bytes <= left_bytes):
        return 1
    if left:
        return 0
    return None
