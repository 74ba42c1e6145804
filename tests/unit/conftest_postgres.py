"""A throwaway PostgreSQL cluster for the results-database tests, and the ``backend_url`` fixture.

Not a conftest.py (tests/conftest.py belongs to the whole suite): test modules import the
fixtures from here. The cluster is made with Debian's server binaries
(``apt-get install -y postgresql``: /usr/lib/postgresql/<ver>/bin/initdb, pg_ctl), listens on a free
127.0.0.1 port only (no Unix socket), trusts local connections, runs without fsync, lives in a
temporary folder and is stopped and deleted at the end of the session. initdb refuses to run as
root, so as root the server runs as the ``postgres`` user (``runuser -u postgres``); its folder is a
fresh ``tempfile.mkdtemp`` owned by that user, because pytest's tmp_path folders are private to root.
Each test gets a database of its own (CREATE DATABASE / DROP DATABASE ... WITH (FORCE)).

Tests skip, with the reason, only when the server binaries or the psycopg driver are absent.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "stran"
INSTALL_HINT = "apt-get update && apt-get install -y postgresql"
_db_numbers = itertools.count(1)


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    bindir: Path

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"


def find_postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<ver>/bin with initdb and pg_ctl, else the folder of an initdb on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_postgres_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found; install them with `{INSTALL_HINT}`")
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed (pip install 'psycopg[binary]')")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no 'postgres' user to run initdb as (initdb refuses root)")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser(1) to start PostgreSQL as the 'postgres' user")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="stran-pg-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, log = base / "data", base / "server.log"
    started = False
    try:
        init = subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "--encoding=UTF8",
             "--no-locale", "--no-sync"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180, cwd=base,
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout[-3000:]}")
        for _attempt in range(3):
            port = _free_port()
            options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            start = subprocess.run(
                [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, cwd=base,
            )
            if start.returncode == 0:
                started = True
                break
        if not started:
            pytest.fail(f"pg_ctl start failed; server log:\n{log.read_text(errors='replace')[-3000:] if log.exists() else '(none)'}")
        yield PostgresServer("127.0.0.1", port, PG_USER, bindir)
    finally:
        if started:
            subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A URL to a new, empty database in the session's cluster; dropped after the test."""
    import psycopg

    name = f"stran_test_{os.getpid()}_{next(_db_numbers)}"
    admin = f"host={postgres_server.host} port={postgres_server.port} user={postgres_server.user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a SQLite file in tmp_path and against a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "results.sqlite")
    return str(request.getfixturevalue("postgres_url"))
