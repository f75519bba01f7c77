"""Whether Spark can start on this machine (shared by the Spark tests)."""

from __future__ import annotations

import shutil


def java_missing() -> str | None:
    """Why Spark cannot start here, or None."""
    if shutil.which("java") is None:
        return "Spark tests need Java (OpenJDK 17: apt-get install openjdk-17-jre-headless)"
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "Spark tests need pyspark: pip install 'strom[spark]'"
    return None
