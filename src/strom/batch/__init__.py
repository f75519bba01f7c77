"""The local engine for bounded runs: a driver and worker processes on one machine.

``strom run FILE --engine local`` (or :func:`run_local`) runs a bounded pipeline as jobs of
stages: map tasks over files packed to at most 128 MB each (less under a small ``memory``) or
over an earlier stage's results, a shuffle through Arrow IPC files, reduce tasks per bucket
(windows, keyed aggregations, equi-joins, top-k, sorts, distinct: :mod:`strom.batch.planner`
lists what runs), except that a join with a small input reads it whole in every map task of
the other and shuffles nothing (``broadcast``); failed tasks are recomputed from their inputs
(:mod:`strom.batch.driver` states the guarantees). Modules: ``planner`` (the plan lowered to
jobs), ``columns`` (what each stage ships), ``tasks`` (packing files into tasks), ``execute``
(what a task does; joins, top-k and distinct in ``relational``, the full sort in ``sort``),
``shuffle``, ``broadcast``, ``commit``, ``pool`` and ``worker`` (the processes), ``progress``,
``memory``.
"""

from typing import TYPE_CHECKING

from strom._lazy import lazy_exports

if TYPE_CHECKING:
    from strom.batch.driver import BadFileError, LocalEngine, RunReport, TaskFailed, run_local
    from strom.batch.progress import JsonProgress, PlainProgress, Progress, RichProgress

__all__ = [
    "BadFileError",
    "JsonProgress",
    "LocalEngine",
    "PlainProgress",
    "Progress",
    "RichProgress",
    "RunReport",
    "TaskFailed",
    "run_local",
]

_DRIVER = ["BadFileError", "LocalEngine", "RunReport", "TaskFailed", "run_local"]
_PROGRESS = ["JsonProgress", "PlainProgress", "Progress", "RichProgress"]
# lazy, so that a worker process importing strom.batch.worker does not load the driver
if not TYPE_CHECKING:  # type checkers read the imports above (and flag unknown names)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {name: "strom.batch.driver" for name in _DRIVER}
        | {name: "strom.batch.progress" for name in _PROGRESS},
    )
