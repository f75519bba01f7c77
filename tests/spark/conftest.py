"""One SparkSession (local[2]) for every Spark test; skipped, saying why, without Java or
pyspark (``pip install 'strom[spark]'``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest


def java_missing() -> str | None:
    """Why Spark cannot start here, or None."""
    if shutil.which("java") is None:
        return "Spark tests need Java (OpenJDK 17: apt-get install openjdk-17-jre-headless)"
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "Spark tests need pyspark: pip install 'strom[spark]'"
    return None


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    reason = java_missing()
    if reason is not None:
        pytest.skip(reason)
    from strom.spark import spark_session

    session = spark_session("local[2]")
    # tiny inputs: a few shuffle partitions, not Spark's 200 tasks per group-by
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()
