"""TPC-H on strom beside Polars, DuckDB and PySpark: ``strom bench batch`` (see :mod:`.runner`)."""
