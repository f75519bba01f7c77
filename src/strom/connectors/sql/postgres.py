"""What the PostgreSQL connectors share: the driver import, connections with errors that name
the server, and the mapping between Polars and PostgreSQL types (pure functions).

Needs psycopg 3: ``pip install 'strom[postgres]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import polars as pl

from strom.connectors.sql.table_sink import json_text, quote

INSTALL_HINT = "strom's PostgreSQL connectors need psycopg: pip install 'strom[postgres]'"

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without psycopg
    raise ImportError(INSTALL_HINT, name=exc.name) from exc

__all__ = [
    "INSTALL_HINT",
    "PostgresConnectionError",
    "connect",
    "copy_chunks",
    "endpoint",
    "polars_type",
    "postgres_type",
    "qualified",
    "select_expression",
    "to_copy_frame",
    "writable",
]

#: Seconds a connection attempt may take unless the DSN says ``connect_timeout``.
CONNECT_TIMEOUT_S = 10

#: Rows per ``COPY`` chunk: bounds the memory of the CSV text of a large batch.
COPY_ROWS = 50_000


class PostgresConnectionError(ConnectionError):
    """The PostgreSQL server could not be reached, or the connection was lost and could not be
    re-established. The message names the server (host, port, database)."""


def endpoint(dsn: str) -> str:
    """``host:port/dbname`` of ``dsn`` for messages (never its password), with libpq's
    environment defaults filled in where the DSN is silent."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid DSN>"
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    db = str(params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or "")
    return f"{host}:{port}/{db}"


def connect(dsn: str, who: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection with the session time zone UTC (timestamptz values read and
    written as UTC). Raises :class:`PostgresConnectionError` naming the server."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"{who}: invalid PostgreSQL DSN: {exc}") from None
    timeout = params.get("connect_timeout", CONNECT_TIMEOUT_S)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        raise PostgresConnectionError(
            f"{who}: cannot connect to PostgreSQL at {endpoint(dsn)}: {exc}"
        ) from exc
    try:
        conn.execute("SET TIME ZONE 'UTC'")
    except psycopg.Error as exc:
        conn.close()
        raise PostgresConnectionError(
            f"{who}: lost the new connection to PostgreSQL at {endpoint(dsn)}: {exc}"
        ) from exc
    return conn


def qualified(table: str) -> str:
    """``table`` quoted for PostgreSQL; ``schema.table`` names a table in that schema."""
    return ".".join(quote(part) for part in table.split(".", 1))


def postgres_type(dtype: pl.DataType) -> str:
    """The column type a new table gets for a Polars type; ``TypeError`` if there is none.

    Integers map to the smallest type that holds them (UInt64 and 128-bit integers to
    ``numeric``), floats to ``real``/``double precision``, strings, categoricals and enums to
    ``text``, Binary to ``bytea``, Datetime to ``timestamp`` (``timestamptz`` with a time
    zone), Duration to ``interval``, Decimal to ``numeric(p, s)``, nested types to ``jsonb``,
    and the Null type (an all-null column) to ``text``.
    """
    if dtype.is_integer():
        return _INTEGERS[str(dtype)]
    if isinstance(dtype, pl.Float16 | pl.Float32):
        return "real"
    if isinstance(dtype, pl.Float64):
        return "double precision"
    if isinstance(dtype, pl.Decimal):
        return f"numeric({dtype.precision}, {dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "timestamp" if dtype.time_zone is None else "timestamptz"
    named = _NAMED.get(type(dtype))
    if named is not None:
        return named
    raise TypeError(f"PostgreSQL has no column type for Polars {dtype}")


_INTEGERS = {
    "Int8": "smallint",
    "Int16": "smallint",
    "Int32": "integer",
    "Int64": "bigint",
    "Int128": "numeric(39, 0)",
    "UInt8": "smallint",
    "UInt16": "integer",
    "UInt32": "bigint",
    "UInt64": "numeric(20, 0)",
    "UInt128": "numeric(39, 0)",
}

_NAMED: dict[type[pl.DataType], str] = {
    pl.Boolean: "boolean",
    pl.String: "text",
    pl.Categorical: "text",
    pl.Enum: "text",
    pl.Binary: "bytea",
    pl.Date: "date",
    pl.Time: "time",
    pl.Duration: "interval",
    pl.Struct: "jsonb",
    pl.List: "jsonb",
    pl.Array: "jsonb",
    pl.Null: "text",
}

_INTEGER_TYPES = {"int2", "int4", "int8"}
_NUMERIC_TYPES = {*_INTEGER_TYPES, "float4", "float8", "numeric"}
_TEXT_TYPES = {"text", "varchar", "bpchar", "name", "citext"}


def writable(dtype: pl.DataType, typname: str) -> bool:
    """Whether a Polars column of ``dtype`` may be written to a column whose (base) type is
    ``typname`` (``pg_type.typname``: ``int4``, ``timestamptz`` …).

    Numbers go to numeric columns (a value out of the column's range fails the batch), text
    to any column (PostgreSQL parses it), nested values to ``json``/``jsonb``/text, and every
    other type to the column type it creates (:func:`postgres_type`) or its close kin; an
    all-null column anywhere.
    """
    if isinstance(dtype, pl.Null | pl.String | pl.Categorical | pl.Enum):
        return True
    if dtype.is_integer() or dtype.is_decimal():
        return typname in _NUMERIC_TYPES
    if dtype.is_float():
        return typname in {"float4", "float8", "numeric"}
    if isinstance(dtype, pl.Struct | pl.List | pl.Array):
        return typname in {"json", "jsonb", *_TEXT_TYPES}
    if isinstance(dtype, pl.Datetime | pl.Date):
        return typname in {"timestamp", "timestamptz"} or (
            isinstance(dtype, pl.Date) and typname == "date"
        )
    allowed = {pl.Boolean: {"bool"}, pl.Binary: {"bytea"}, pl.Time: {"time", "timetz"}}
    allowed[pl.Duration] = {"interval"}
    return typname in allowed.get(type(dtype), set())


def polars_type(typname: str, typmod: int = -1) -> pl.DataType:
    """The Polars type a column of PostgreSQL type ``typname`` is read as.

    Integers, floats, booleans, ``bytea``, dates, times and timestamps map to their Polars
    counterparts (``timestamptz`` in UTC, microseconds), ``interval`` to Duration,
    ``numeric(p, s)`` with ``p <= 38`` to Decimal and other ``numeric`` to Float64; everything
    else (text, ``json``, ``uuid``, arrays, enums …) is read as its text: String.
    """
    simple: dict[str, pl.DataType] = {
        "int2": pl.Int16(),
        "int4": pl.Int32(),
        "int8": pl.Int64(),
        "float4": pl.Float32(),
        "float8": pl.Float64(),
        "bool": pl.Boolean(),
        "bytea": pl.Binary(),
        "date": pl.Date(),
        "time": pl.Time(),
        "timestamp": pl.Datetime("us"),
        "timestamptz": pl.Datetime("us", "UTC"),
        "interval": pl.Duration("us"),
    }
    if typname in simple:
        return simple[typname]
    if typname == "numeric":
        # typmod = ((precision << 16) | scale) + 4; -1 when the column has no precision
        if typmod >= 4 and (precision := (typmod - 4) >> 16) <= 38:
            return pl.Decimal(precision, (typmod - 4) & 0xFFFF)
        return pl.Float64()
    return pl.String()


def select_expression(name: str, typname: str, typmod: int = -1) -> str:
    """The ``SELECT`` item reading column ``name`` as :func:`polars_type` expects its value:
    text for the types read as String, ``double precision`` for unbounded ``numeric``."""
    target = polars_type(typname, typmod)
    if isinstance(target, pl.String) and typname not in _TEXT_TYPES:
        return f"{quote(name)}::text"
    if isinstance(target, pl.Float64) and typname == "numeric":
        return f"{quote(name)}::float8"
    return quote(name)


def to_copy_frame(batch: pl.DataFrame) -> pl.DataFrame:
    """``batch`` with every column in the text form ``COPY ... (FORMAT csv)`` parses into
    its :func:`postgres_type`: hex ``bytea``, ISO dates and times (UTC with offset for
    zoned datetimes; microseconds), durations in microseconds, nested values as JSON.
    Numbers, booleans and strings pass as they are."""
    exprs: list[pl.Expr] = []
    for name, dtype in batch.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Binary):
            exprs.append(pl.lit("\\x") + col.bin.encode("hex"))
        elif isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                exprs.append(col.dt.strftime("%Y-%m-%d %H:%M:%S%.6f"))
            else:
                text = col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S%.6f")
                exprs.append(text + pl.lit("+00"))
        elif isinstance(dtype, pl.Date):
            exprs.append(col.dt.strftime("%Y-%m-%d"))
        elif isinstance(dtype, pl.Time):
            exprs.append(col.dt.strftime("%H:%M:%S%.6f"))
        elif isinstance(dtype, pl.Duration):
            exprs.append(col.dt.total_microseconds().cast(pl.String) + pl.lit(" microseconds"))
        elif isinstance(dtype, pl.Struct | pl.List | pl.Array):
            exprs.append(json_text(name, dtype))
        elif dtype.is_decimal() or isinstance(dtype, pl.Categorical | pl.Enum):
            exprs.append(col.cast(pl.String))
        else:
            exprs.append(col)
    return batch.select(e.alias(n) for e, n in zip(exprs, batch.columns, strict=True))


def copy_chunks(frame: pl.DataFrame) -> Iterator[bytes]:
    """The CSV text of ``frame`` (from :func:`to_copy_frame`) in chunks of :data:`COPY_ROWS`.

    Every string is quoted and a null is an empty unquoted field: ``COPY``'s CSV format then
    tells null from the empty string, and a value ``\\.`` cannot end the data early.
    """
    for chunk in frame.iter_slices(COPY_ROWS):
        yield chunk.write_csv(include_header=False, quote_style="non_numeric").encode()
