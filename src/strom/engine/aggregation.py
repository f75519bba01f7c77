"""The aggregation contract: what one window aggregation defines for every backend.

An aggregation (an :class:`Agg`: its input ``column`` and output ``name``) owns

- its output type (:meth:`Agg.output_dtype`);
- its bounded form: Polars expressions over a whole group (:meth:`Agg.bounded_exprs`, rows in
  (event time, partition, position) order), finished by :meth:`Agg.bounded_finish` if not
  ``None`` (which may raise naming the group, e.g. an integer sum outside Int64's range);
- its incremental form: expressions summarizing one batch's rows of a group as a *partial*
  (:meth:`Agg.partial_exprs`, columns ``prefix + s`` for ``s`` in :attr:`Agg.partials`; rows of
  one source partition, in (event time, position) order when :attr:`Agg.needs_order`), and an
  accumulator of :attr:`Agg.width` values: :meth:`Agg.create` (empty), :meth:`Agg.add` (fold
  in a partial row), :meth:`Agg.merge` (fold in another accumulator), :meth:`Agg.result`.

Laws, tested per class: ``merge`` is associative and commutative with ``create()`` as identity,
and however a group's rows are split into partials, adding them and merging the accumulators in
any order gives the bounded result over all rows (floating-point sums and moments up to the last
bits). A backend with its own state layout (the streaming runtime's NumPy slots) reproduces
these rules, calling the classes' elementwise hooks (``finish``, ``better``, ``takes``) so that
both layouts compute the same values.

:data:`strom.engine.aggregations.Aggregation` is the closed union of the concrete classes: a
backend lowering aggregations to its own representation matches over it with ``assert_never``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import polars as pl


@dataclass(frozen=True)
class Agg(ABC):
    """One aggregation of a window: ``column`` (``None`` only for ``count()``) into ``name``."""

    column: str | None
    name: str

    label: ClassVar[str]
    """The function's name (``agg.<label>()``), the prefix of its default output name."""
    partials: ClassVar[tuple[str, ...]]
    """The suffixes of its partial columns, in :meth:`partial_exprs` order."""
    width: ClassVar[int]
    """The number of values in its accumulator."""
    needs_order: ClassVar[bool] = False
    """Partials need a group's rows in (event time, position) order."""

    def __post_init__(self) -> None:
        if self.column is not None and not isinstance(self.column, str):
            raise TypeError(f"agg.{self.label}() takes a column name, got {self.column!r}")
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(
                f"agg.{self.label}(): the output name must be a non-empty string, got {self.name!r}"
            )

    def alias(self, name: str) -> Self:
        """This aggregation with its output column called ``name``."""
        return dataclasses.replace(self, name=name)

    @property
    def expr(self) -> pl.Expr:
        """The input column (for aggregations that have one)."""
        assert self.column is not None
        return pl.col(self.column)

    def input_error(self, input_dtype: pl.DataType) -> str | None:
        """Why a column of ``input_dtype`` cannot be aggregated by this function (None: it
        can). Validation turns the reason into a PlanError naming the column."""
        return None

    @abstractmethod
    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        """The output column's type given the input column's (``None`` for ``count()``)."""

    def bounded_exprs(self, dtype: pl.DataType) -> list[pl.Expr]:
        """Group-by expressions giving the result column ``name`` of type ``dtype`` (with any
        helper columns :meth:`bounded_finish` needs)."""
        return [self._bounded().cast(dtype).alias(self.name)]

    def _bounded(self) -> pl.Expr:
        raise NotImplementedError

    def bounded_finish(self, dtype: pl.DataType, group: Sequence[str]) -> pl.Expr | None:
        """An expression run over the group-by's output to finish column ``name`` (of output
        type ``dtype``), or None; ``group`` are the columns naming a group (keys, and window
        bounds) for its errors."""
        return None

    @abstractmethod
    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        """Group-by expressions of a batch's partial, named ``prefix + s`` per :attr:`partials`."""

    @abstractmethod
    def create(self) -> list[Any]:
        """An empty accumulator (the identity of :meth:`merge`)."""

    @abstractmethod
    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        """Fold one row of :meth:`partial_exprs` output (from source ``partition``) into ``acc``."""

    @abstractmethod
    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        """Fold accumulator ``other`` into ``into`` in place (``other`` is left unchanged)."""

    @abstractmethod
    def result(self, acc: Sequence[Any]) -> Any:
        """The output value of an accumulator."""
