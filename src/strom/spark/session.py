"""The SparkSession strom runs on, and the settings its semantics rely on.

strom's results are Polars' results, so the session is set to compute like Polars where Spark
lets it choose: integer overflow in expressions wraps and casts of native expressions never
fail (``spark.sql.ansi.enabled=false``; strom only lowers casts that cannot fail; ``agg.sum`` is
exact or fails with strom's own check, :func:`strom.spark.windows.checked_sums`), and timestamps
are read and written in UTC (``spark.sql.session.timeZone=UTC``). :func:`configure` sets both on
any session (they are runtime settings), so a session a user created works as well.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

SETTINGS = {
    "spark.sql.ansi.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    # Arrow batches from mapInArrow; strom's own steps never depend on their size
    "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
}


def spark_session(master: str = "local[2]", app_name: str = "strom") -> SparkSession:
    """The active session, or a new one on ``master`` (``local[2]``, ``local[2,4]`` — two
    threads, each task tried up to four times —, ``spark://host:7077``, ``yarn``).

    Python workers run this interpreter (``PYSPARK_PYTHON`` unless set), so on a cluster strom
    and Polars must be installed at the same path on every executor. No web UI is started and
    Spark's console progress bar is off (strom prints its own).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master.startswith("local"):  # nothing listens beyond this machine (a cluster must
        # reach the driver, so there Spark's own defaults apply)
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
            "spark.driver.host", "127.0.0.1"
        )
    for key, value in SETTINGS.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    configure(spark)
    return spark


def configure(spark: SparkSession) -> None:
    """Apply :data:`SETTINGS` to ``spark`` (runtime settings: safe on a shared session)."""
    for key, value in SETTINGS.items():
        spark.conf.set(key, value)
