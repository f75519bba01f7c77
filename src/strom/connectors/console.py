"""A sink that prints batches, for exploring pipelines."""

from __future__ import annotations

import sys

import polars as pl

from strom.engine.contracts import AtLeastOnceSink


class ConsoleSink(AtLeastOnceSink):
    """Prints every batch (for exploring pipelines).

    **Delivery guarantee: at-least-once**, best-effort, for humans: :meth:`pre_commit` flushes
    standard output; a replay prints its rows again.
    """

    def __init__(self, *, max_rows: int = 20) -> None:
        self.max_rows = max_rows

    def write(self, batch: pl.DataFrame) -> None:
        with pl.Config(tbl_rows=self.max_rows):
            print(batch)

    def pre_commit(self, checkpoint_id: int) -> None:
        sys.stdout.flush()
