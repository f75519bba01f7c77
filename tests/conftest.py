"""Suite-wide options: ``--run-slow`` (or STROM_SLOW=1) runs soak/crash tests in full."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=bool(os.environ.get("STROM_SLOW")),
        help="run the slow soak, load and crash tests in full",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or STROM_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a real tmpfs of the given size (``"256k"``, ``"2m"``) for disk-full tests; skips
    where mounting is not permitted (it needs root) and unmounts afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mount_point = tmp_path / f"tmpfs-{len(mounted)}"
        mount_point.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot run mount to create a tiny tmpfs: {exc}")
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(mount_point)
        return mount_point

    try:
        yield mount
    finally:
        for mount_point in mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=30)
