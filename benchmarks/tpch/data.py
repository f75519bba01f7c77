"""TPC-H tables from ``tpchgen-cli`` (a pip-installed generator, offline): the two large tables
(``lineitem``, ``orders``) as ``FILES`` Parquet files each, the small ones as one file each.

Made once per scale factor under the cache directory; a marker file records a complete set, so an
interrupted generation is redone rather than read half-written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["CACHE", "FILES", "LARGE", "SMALL", "generate", "table_glob"]

CACHE = Path.home() / ".cache" / "strom-bench" / "tpch"
FILES = 2_000
LARGE = ("lineitem", "orders")
SMALL = ("customer", "supplier", "nation", "region")


def _generator() -> str:
    found = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    if not Path(found).exists():
        raise RuntimeError("tpchgen-cli is not installed: pip install -e '.[bench]'")
    return found


def generate(scale: float, root: Path = CACHE, files: int = FILES) -> Path:
    """The directory holding scale factor ``scale``'s tables (generated if missing)."""
    directory = root / f"sf{scale:g}-{files}"
    marker = directory / "complete"
    if marker.exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    common = [_generator(), "parquet", "-s", f"{scale:g}", "--output-dir", str(directory)]
    subprocess.run([*common, "--tables", ",".join(LARGE), f"--parts={files}"], check=True)
    subprocess.run([*common, "--tables", ",".join(SMALL)], check=True)
    marker.touch()
    return directory


def table_glob(directory: Path, table: str) -> str:
    """A glob matching every file of ``table``."""
    if table in LARGE:
        return str(directory / table / "*.parquet")
    return str(directory / f"{table}.parquet")
