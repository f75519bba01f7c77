"""Polars expressions as Spark columns, where the two compute exactly the same values.

The translation reads the expression tree Polars itself serializes
(``Expr.meta.serialize(format="json")``); its shape is pinned to the Polars version strom
supports (:data:`POLARS_TESTED`; the tests cover every construct below). An expression is
lowered natively only if every part of it is in this subset, over columns of the types whose
arithmetic Spark and Polars share (Int64, Float64, Boolean, String):

- column references, integer/float/string/boolean/null literals, ``alias``;
- ``+ - *`` on numbers (Int64 wraps in both: the session runs with ANSI mode off), unary minus,
  ``abs``; comparisons ``== != < <= > >=`` (NaN equals NaN and sorts above every number in
  both); ``& |`` on Booleans and ``~`` (Kleene logic in both);
- ``is_null``, ``is_not_null``, ``fill_null(literal)``, ``when/then/otherwise``;
- casts that cannot fail: integer or Boolean to Int64 or Float64.

Everything else (``/``, ``//`` and ``%``, whose null and sign rules differ; string functions;
casts that can fail; any other type) returns ``None``, and the node runs as the exact Polars
expression inside ``mapInArrow`` (:mod:`strom.spark.arrow`). Such expressions must be row-wise:
:func:`batch_dependent` names the ones that are not (aggregations, ``over``, ``shift``, ranks,
cumulative functions …), which the backend refuses, as their result would depend on where Spark
splits its Arrow batches.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from pyspark.sql import Column
from pyspark.sql import functions as F

from strom.spark.types import spark_type

POLARS_TESTED = "2.1"
"""The Polars version whose serialized expression trees this module reads (tests pin it)."""

_KINDS: dict[type[pl.DataType], str] = {
    pl.Int64: "int",
    pl.Float64: "float",
    pl.Boolean: "bool",
    pl.String: "str",
}
_ARITHMETIC = {"Plus": "__add__", "Minus": "__sub__", "Multiply": "__mul__"}
_COMPARISON = {
    "Eq": "__eq__",
    "NotEq": "__ne__",
    "Lt": "__lt__",
    "LtEq": "__le__",
    "Gt": "__gt__",
    "GtEq": "__ge__",
}
_LOGICAL = {"And": "__and__", "Or": "__or__"}

_BATCH_DEPENDENT_NODES = {"Agg", "Over", "Window", "Slice", "Sort", "SortBy", "Gather", "Len"}
_BATCH_DEPENDENT_FUNCTIONS = {
    "CumSum", "CumProd", "CumMin", "CumMax", "CumCount", "CumReduce", "CumFold", "Shift",
    "ShiftAndFill", "Diff", "PctChange", "Rank", "Unique", "UniqueCounts", "ArgUnique",
    "Reverse", "Interpolate", "InterpolateBy", "FillNullWithStrategy", "RollingExpr",
    "RollingExprBy", "IsFirstDistinct", "IsLastDistinct", "IsUnique", "IsDuplicated", "Mode",
    "ValueCounts", "GatherEvery", "Range", "Implode", "RLE", "RLEID", "ExtendConstant",
    "Entropy", "Hist", "SearchSorted", "TopK", "TopKBy", "ArgSort", "EwmMean", "EwmStd",
    "EwmVar", "EwmMeanBy", "Repeat", "Corr", "Cov", "Peaks", "PeakMin", "PeakMax",
}  # fmt: skip

Lowered = tuple[Column, str]
"""A Spark column and its kind: ``int``/``float``/``bool``/``str`` (a typed value), ``lint``/
``lfloat`` (a number literal, typed by what it meets, as Polars' dynamic literals are) or
``null``."""


def tree(expr: pl.Expr) -> Any:
    """The expression's serialized tree (plain JSON values)."""
    return json.loads(expr.meta.serialize(format="json"))


def native_column(expr: pl.Expr, schema: pl.Schema) -> Column | None:
    """``expr`` over columns of ``schema`` as a Spark column named and typed as Polars names
    and types its result, or ``None`` if it is outside the exact subset."""
    try:
        dtype = pl.LazyFrame(schema=schema).select(expr).collect_schema()
        lowered = _lower(tree(expr), schema)
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if lowered is None or len(dtype) != 1:
        return None
    name, out = next(iter(dtype.items()))
    return lowered[0].cast(spark_type(out, "expression")).alias(name)


def batch_dependent(expr: pl.Expr) -> str | None:
    """What makes ``expr``'s result depend on how rows are split into batches, or ``None``."""
    found = _find_batch_dependent(tree(expr))
    if found is None:
        try:
            if not expr.meta.is_row_separable():
                return "it is not row-separable"
        except pl.exceptions.PolarsError:
            return None  # an opaque Python function: taken as row-wise (see the docstring)
    return found


def _find_batch_dependent(node: Any) -> str | None:
    if isinstance(node, str):
        return node if node in _BATCH_DEPENDENT_NODES else None
    if isinstance(node, list):
        for item in node:
            if (found := _find_batch_dependent(item)) is not None:
                return found
        return None
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if key in _BATCH_DEPENDENT_NODES:
            return str(key)
        if key == "function":
            name = value if isinstance(value, str) else next(iter(value), None)
            if isinstance(value, dict) and isinstance(inner := value.get(name), str):
                name = inner if inner in _BATCH_DEPENDENT_FUNCTIONS else name
            if isinstance(name, str) and name in _BATCH_DEPENDENT_FUNCTIONS:
                return name
        if (found := _find_batch_dependent(value)) is not None:
            return found
    return None


def _lower(node: Any, schema: pl.Schema) -> Lowered | None:
    if not isinstance(node, dict) or len(node) != 1:
        return None
    ((tag, body),) = node.items()
    if tag == "Column":
        kind = _KINDS.get(type(schema[body])) if body in schema else None
        return None if kind is None else (F.col(f"`{body}`"), kind)
    if tag == "Literal":
        return _literal(body)
    if tag == "Alias":
        inner = _lower(body[0], schema)
        return None if inner is None else (inner[0].alias(body[1]), inner[1])
    if tag == "BinaryExpr":
        return _binary(body, schema)
    if tag == "Function":
        return _function(body, schema)
    if tag == "Ternary":
        return _ternary(body, schema)
    if tag == "Cast":
        return _cast(body, schema)
    return None


def _literal(body: Any) -> Lowered | None:
    if not isinstance(body, dict) or len(body) != 1:
        return None
    ((form, value),) = body.items()
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((kind, v),) = value.items()
    if form == "Dyn" and kind == "Int" and -(2**63) <= v < 2**63:
        return F.lit(v).cast("long"), "lint"
    if form == "Dyn" and kind == "Float" and isinstance(v, float):
        return F.lit(v).cast("double"), "lfloat"
    if form != "Scalar":
        return None
    if kind == "Null":
        return F.lit(None), "null"
    if kind == "Boolean" and isinstance(v, bool):
        return F.lit(v), "bool"
    if kind == "String" and isinstance(v, str):
        return F.lit(v), "str"
    if kind == "Int64" and isinstance(v, int):
        return F.lit(v).cast("long"), "int"
    if kind == "Float64" and isinstance(v, float):
        return F.lit(v).cast("double"), "float"
    return None


def _numeric(kind: str) -> bool:
    return kind in ("int", "float", "lint", "lfloat")


def _arith_kind(a: str, b: str) -> str:
    if a in ("float", "lfloat") or b in ("float", "lfloat"):
        return "lfloat" if a.startswith("l") and b.startswith("l") else "float"
    return "lint" if a == b == "lint" else "int"


def _same_family(a: str, b: str) -> bool:
    if _numeric(a) and _numeric(b):
        return True
    return a == b or "null" in (a, b)


def _binary(body: Any, schema: pl.Schema) -> Lowered | None:
    left, right = _lower(body["left"], schema), _lower(body["right"], schema)
    if left is None or right is None:
        return None
    (lc, lk), (rc, rk), op = left, right, body["op"]
    if op in _ARITHMETIC and _numeric(lk) and _numeric(rk):
        return getattr(lc, _ARITHMETIC[op])(rc), _arith_kind(lk, rk)
    if op in _COMPARISON and "null" not in (lk, rk) and _same_family(lk, rk):
        return getattr(lc, _COMPARISON[op])(rc), "bool"
    if op in _LOGICAL and lk == rk == "bool":
        return getattr(lc, _LOGICAL[op])(rc), "bool"
    return None


def _function(body: Any, schema: pl.Schema) -> Lowered | None:
    inputs = [_lower(i, schema) for i in body["input"]]
    if any(i is None for i in inputs):
        return None
    args = [i for i in inputs if i is not None]
    function = body["function"]
    if isinstance(function, dict) and len(args) == 1:
        (column, kind) = args[0]
        boolean = function.get("Boolean")
        if boolean == "IsNull":
            return column.isNull(), "bool"
        if boolean == "IsNotNull":
            return column.isNotNull(), "bool"
        if boolean == "Not" and kind == "bool":
            return ~column, "bool"
        return None
    if function == "Negate" and len(args) == 1 and args[0][1] in ("int", "float"):
        return -args[0][0], args[0][1]
    if function == "Abs" and len(args) == 1 and args[0][1] in ("int", "float"):
        return F.abs(args[0][0]), args[0][1]
    if function == "FillNull" and len(args) == 2:
        (value, kind), (fill, fill_kind) = args
        same = kind == fill_kind or (kind == "int" and fill_kind == "lint")
        same = same or (kind == "float" and fill_kind in ("lint", "lfloat"))
        return (F.coalesce(value, fill), kind) if same and kind != "null" else None
    return None


def _ternary(body: Any, schema: pl.Schema) -> Lowered | None:
    parts = [_lower(body[k], schema) for k in ("predicate", "truthy", "falsy")]
    if any(p is None for p in parts):
        return None
    (pc, pk), (tc, tk), (fc, fk) = (p for p in parts if p is not None)
    if pk != "bool" or not _same_family(tk, fk):
        return None
    if "null" in (tk, fk):
        kind = fk if tk == "null" else tk
    elif _numeric(tk):
        kind = _arith_kind(tk, fk)
    else:
        kind = tk
    return F.when(pc, tc).otherwise(fc), kind


def _cast(body: Any, schema: pl.Schema) -> Lowered | None:
    inner = _lower(body["expr"], schema)
    target = body["dtype"].get("Literal") if isinstance(body["dtype"], dict) else None
    if inner is None or inner[1] not in ("int", "bool", "float", "lint"):
        return None
    column, kind = inner
    if target == "Float64" and kind != "bool":
        return column.cast("double"), "float"
    if target == "Int64" and kind in ("int", "bool", "lint"):
        return column.cast("long"), "int"
    return None
