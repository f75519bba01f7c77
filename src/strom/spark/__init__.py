"""The Spark backend: a strom plan run as Spark DataFrame operations (``pip install
'strom[spark]'``).

``run_spark(pipeline, spark=None, master="local[2]")`` lowers the plan (:mod:`.lower`) and runs
every sink's DataFrame. What runs natively, what runs as the exact Polars expression inside
``mapInArrow`` and what is refused are listed in :mod:`.lower`'s docstring and the README.

``import strom`` never imports this package (nor pyspark); importing it without pyspark fails
with the ``pip install`` to run.
"""

from __future__ import annotations

try:
    import pyspark  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Spark backend needs pyspark: run pip install 'strom[spark]'") from exc

from strom.spark.runner import run_spark
from strom.spark.session import spark_session

__all__ = ["run_spark", "spark_session"]
