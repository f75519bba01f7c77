"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

The session fixture :func:`postgres_server` starts one server on a free 127.0.0.1 port (its
unix socket in the same temporary directory), creates the database ``strom_test`` and stops
the server and removes the directory at the end, also when a test or the start failed.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
(``runuser -u postgres --``), which owns the directory. :func:`postgres_dsn` gives each test
a DSN whose ``search_path`` is a fresh schema, so tables of different tests never meet.
Without the server binaries the fixture fails (it does not skip): ``scripts/setup.sh --dev``
installs them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

DATABASE = "strom_test"
SUPERUSER = "postgres"
_SETUP_HINT = "run scripts/setup.sh --dev (it installs Debian's postgresql package)"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``PATH`` first (Debian keeps them
    out of it), then the newest ``/usr/lib/postgresql/<version>/bin``."""
    found = [shutil.which(name) for name in ("initdb", "pg_ctl")]
    if all(found):
        dirs = {Path(p).resolve().parent for p in found if p}
        if len(dirs) == 1:
            return dirs.pop()

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


@dataclass
class PostgresServer:
    """A running test server; :attr:`dsn` reaches its test database over TCP."""

    bin_dir: Path
    root: Path
    host: str
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def dsn_for(self, dbname: str = DATABASE, **params: str) -> str:
        extra = "".join(f" {k}={v}" for k, v in params.items())
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname}{extra}"

    @property
    def dsn(self) -> str:
        return self.dsn_for()

    def connect(self, dbname: str = DATABASE) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser autocommit connection for setting up and checking tables."""
        return psycopg.connect(self.dsn_for(dbname), autocommit=True)

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no server log)"


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(
        _as_server_user(argv), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr or done.stdout}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(bin_dir: Path) -> PostgresServer:
    """initdb and start a server; on any failure stop what was started and remove it all."""
    # under /tmp: short enough for the unix socket path, and open to the postgres user
    parent = "/tmp" if Path("/tmp").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="strom-pg-", dir=parent))
    server = PostgresServer(bin_dir, root, "127.0.0.1", 0)
    try:
        server.socket_dir.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            for path in (root, server.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            root,
            "initdb",
        )
        for attempt in range(3):  # another process may take the free port before the server
            server.port = _free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {server.port}",
                    f"-k {server.socket_dir}",
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                ]
            )
            try:
                _run(
                    [
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(server.data_dir),
                        "-l",
                        str(server.log_file),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        options,
                        "start",
                    ],
                    root,
                    "pg_ctl start",
                )
                break
            except RuntimeError as exc:
                if attempt == 2:
                    raise RuntimeError(f"{exc}\nserver log:\n{server.log()}") from None
        with server.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: PostgresServer) -> None:
    """Stop the server (fast, then immediate, then SIGKILL) and remove its directory."""
    if (server.data_dir / "postmaster.pid").exists():
        for mode in ("fast", "immediate"):
            argv = [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", mode]
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run([*argv, "-w", "-t", "30", "stop"], server.root, "pg_ctl stop")
                break
        else:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid_line = (server.data_dir / "postmaster.pid").read_text().splitlines()[0]
                os.kill(int(pid_line), signal.SIGKILL)
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (see the module docstring)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in "
            f"/usr/lib/postgresql/*/bin: {_SETUP_HINT}",
            pytrace=False,
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            pytest.fail(
                f"running as root, PostgreSQL needs the {SUPERUSER!r} user to run as: "
                f"{_SETUP_HINT}",
                pytrace=False,
            )
    try:
        server = start(bin_dir)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, psycopg.Error) as exc:
        pytest.fail(f"could not start a PostgreSQL test server from {bin_dir}: {exc}")
    try:
        yield server
    finally:
        stop(server)


_schemas = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN of the test database whose ``search_path`` is a fresh, empty schema."""
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40].strip("_")
    schema = f"t{next(_schemas)}_{stem}"
    with postgres_server.connect() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield postgres_server.dsn_for(options=f"'-c search_path={schema}'")
    finally:
        with postgres_server.connect() as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
