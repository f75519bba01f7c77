"""One SparkSession for every Spark test: ``local[2,4]`` (two threads, and a failed task is
tried up to four times, which the retry test shows); skipped, saying why, without Java or
pyspark (``pip install 'strom[spark]'``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from spark_env import java_missing


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    reason = java_missing()
    if reason is not None:
        pytest.skip(reason)
    from strom.spark import spark_session

    session = spark_session("local[2,4]")
    # tiny inputs: a few shuffle partitions, not Spark's 200 tasks per group-by
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()
