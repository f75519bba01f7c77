"""A sink that prints batches, for exploring pipelines."""

from __future__ import annotations

import polars as pl


class ConsoleSink:
    """Prints every batch (for exploring pipelines).

    Delivery guarantee: none; output is best-effort, for humans.
    """

    def __init__(self, *, max_rows: int = 20) -> None:
        self.max_rows = max_rows

    def open(self) -> None:
        pass

    def write(self, batch: pl.DataFrame) -> None:
        with pl.Config(tbl_rows=self.max_rows):
            print(batch)

    def close(self) -> None:
        pass
