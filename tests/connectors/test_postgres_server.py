"""The PostgreSQL test fixture itself: it fails, never skips, without server binaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
from postgres_server import PostgresServer

HERE = Path(__file__).resolve().parent


def test_server_runs_as_configured(postgres_server: PostgresServer) -> None:
    with postgres_server.connect() as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('port'), "
            "current_setting('unix_socket_directories'), current_setting('fsync')"
        ).fetchone()
    assert row == (
        "strom_test",
        str(postgres_server.port),
        str(postgres_server.socket_dir),
        "off",
    )
    via_socket = f"host={postgres_server.socket_dir} port={postgres_server.port} user=postgres"
    with psycopg.connect(via_socket + " dbname=strom_test") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_missing_binaries_fail_the_tests(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
        "import postgres_server\n"
        "postgres_server.find_bin_dir = lambda: None\n"
        "from postgres_server import postgres_server as postgres_server_fixture\n"
        "postgres_server = postgres_server_fixture\n"
    )
    (tmp_path / "test_uses_it.py").write_text("def test_it(postgres_server):\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "1 error" in done.stdout and "skipped" not in done.stdout
    assert "run scripts/setup.sh --dev" in done.stdout
