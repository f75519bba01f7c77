"""Polars types as Spark types and back: the schema every lowered DataFrame carries.

A Spark DataFrame of a strom plan has exactly the node's Polars schema (plus internal
``__strom_`` columns), column for column: :func:`spark_type` maps each Polars type to the Spark
type that holds the same values, and results are cast back to the Polars schema when they reach
a sink (:func:`to_polars`), so a sink sees the types the bounded runner gives it. Unsigned
integers widen to the next signed Spark type (UInt64 has none and is refused); naive
``Datetime`` becomes ``TIMESTAMP_NTZ`` and zoned ``Datetime`` ``TIMESTAMP`` (both microseconds:
nanosecond datetimes are refused rather than truncated).
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
from pyspark.sql import types as T

from strom.pipeline.validate import PlanError

_SIMPLE: dict[type[pl.DataType], T.DataType] = {
    pl.Boolean: T.BooleanType(),
    pl.Int8: T.ByteType(),
    pl.Int16: T.ShortType(),
    pl.Int32: T.IntegerType(),
    pl.Int64: T.LongType(),
    pl.UInt8: T.ShortType(),
    pl.UInt16: T.IntegerType(),
    pl.UInt32: T.LongType(),
    pl.Float32: T.FloatType(),
    pl.Float64: T.DoubleType(),
    pl.String: T.StringType(),
    pl.Binary: T.BinaryType(),
    pl.Date: T.DateType(),
    pl.Null: T.NullType(),
}


def spark_type(dtype: pl.DataType, where: str) -> T.DataType:
    """The Spark type holding ``dtype``'s values (:class:`PlanError` naming ``where`` if none)."""
    simple = _SIMPLE.get(type(dtype))
    if simple is not None:
        return simple
    if isinstance(dtype, pl.Datetime):
        if dtype.time_unit == "ns":
            raise PlanError(
                f"{where}: Spark keeps microseconds; cast the nanosecond {dtype} column to "
                "Datetime('us') first"
            )
        return T.TimestampNTZType() if dtype.time_zone is None else T.TimestampType()
    if isinstance(dtype, pl.Decimal):
        return T.DecimalType(dtype.precision or 38, dtype.scale or 0)
    if isinstance(dtype, pl.List | pl.Array):
        return T.ArrayType(spark_type(_instance(dtype.inner), where))
    if isinstance(dtype, pl.Struct):
        return T.StructType(
            [T.StructField(f.name, spark_type(_instance(f.dtype), where)) for f in dtype.fields]
        )
    raise PlanError(f"{where}: the Spark backend has no type for Polars {dtype}")


def _instance(dtype: Any) -> pl.DataType:
    """A nested type's inner type as an instance (Polars may hold the class, e.g. ``pl.Int64``)."""
    out = dtype() if isinstance(dtype, type) else dtype
    assert isinstance(out, pl.DataType)
    return out


def spark_schema(schema: pl.Schema, where: str) -> T.StructType:
    return T.StructType(
        [T.StructField(n, spark_type(t, f"{where} column {n!r}")) for n, t in schema.items()]
    )


def to_polars(table: pa.Table, schema: pl.Schema) -> pl.DataFrame:
    """An Arrow table from Spark as a frame of exactly ``schema`` (names, order, types)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(_cast(pl.col(n), t, frame.schema[n]) for n, t in schema.items())


def _cast(column: pl.Expr, want: pl.DataType, have: pl.DataType) -> pl.Expr:
    if isinstance(want, pl.Datetime) and isinstance(have, pl.Datetime):
        # Spark hands TIMESTAMP columns over zoned to its session zone (UTC): same instants
        if want.time_zone is None and have.time_zone is not None:
            column = column.dt.replace_time_zone(None)
        elif want.time_zone is not None:
            column = column.dt.convert_time_zone(want.time_zone)
    return column.cast(want)
