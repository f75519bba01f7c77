"""A window's aggregations together, as the streaming runtime pre-aggregates its batches.

Aggregation number ``i`` names its partial columns with :func:`partial_prefix` ``(i)``, so the
partials of several aggregations share one group-by. A row's accumulator (the per-row
reference of :mod:`~strom.runtime.windows.slots`) is one list per aggregation, each laid out
and merged as its :class:`~strom.engine.aggregation.Agg` defines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from strom.engine.aggregation import Agg
from strom.engine.aggregations import Additive
from strom.engine.overflow import narrow_is_exact


def partial_prefix(index: int) -> str:
    """The prefix of aggregation number ``index``'s partial columns."""
    return f"__p{index}_"


class Accumulators:
    """The partials and per-row accumulators of one window's aggregations."""

    def __init__(self, aggs: Sequence[Agg]) -> None:
        self.aggs = tuple(aggs)
        self.needs_order = any(a.needs_order for a in self.aggs)
        self._spans: list[tuple[int, int]] = []
        start = 0
        for a in self.aggs:
            self._spans.append((start, start + len(a.partials)))
            start += len(a.partials)
        self._wide = self.partial_exprs()
        self._narrow = [
            e
            for i, a in enumerate(self.aggs)
            for e in (
                a.partial_exprs(partial_prefix(i), narrow=True)
                if isinstance(a, Additive)
                else a.partial_exprs(partial_prefix(i))
            )
        ]

    def partial_exprs(self) -> list[pl.Expr]:
        """Group-by expressions producing a batch's partials; rows must be in (ts, seq) order
        within each group when :attr:`needs_order`."""
        return [e for i, a in enumerate(self.aggs) for e in a.partial_exprs(partial_prefix(i))]

    def batch_exprs(self, batch: pl.DataFrame) -> list[pl.Expr]:
        """:meth:`partial_exprs` for ``batch``: integer sums with Polars' own ``sum`` where that
        is exact for every group of it (:func:`strom.engine.overflow.narrow_is_exact`), else
        in Int128."""
        sums = [a.column for a in self.aggs if isinstance(a, Additive)]
        if not sums or not narrow_is_exact(batch, sums):
            return self._wide
        return self._narrow

    def from_partial(self, values: Sequence[Any], partition: int) -> list[list[Any]]:
        """An accumulator from one row of :meth:`partial_exprs` output (those columns only)."""
        out: list[list[Any]] = []
        for a, (lo, hi) in zip(self.aggs, self._spans, strict=True):
            acc = a.create()
            a.add(acc, values[lo:hi], partition)
            out.append(acc)
        return out

    def merge(self, into: list[list[Any]], other: Sequence[Sequence[Any]]) -> None:
        """Fold ``other`` into ``into`` in place."""
        for a, mine, theirs in zip(self.aggs, into, other, strict=True):
            a.merge(mine, theirs)

    def finalize(self, acc: Sequence[Sequence[Any]]) -> list[Any]:
        """The output value of each aggregation."""
        return [a.result(x) for a, x in zip(self.aggs, acc, strict=True)]
