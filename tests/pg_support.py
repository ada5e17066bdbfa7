"""A throwaway PostgreSQL cluster for tests: Debian's ``postgresql`` package, a free loopback port.

CI runs as root and initdb/postgres refuse root, so as root the cluster belongs to the
``postgres`` user (``runuser``). Without PostgreSQL the test skips, or fails under
PROBSERVE_STRICT_TESTS=1. Use::

    with running_postgres() as pg:
        url = pg.url          # postgresql://postgres@127.0.0.1:PORT/postgres (trust auth)
        pg.stop()             # pg_ctl stop -m fast (a database outage)
        pg.start()            # the same cluster again, same port
        url = pg.create_database("t1")  # a fresh database on the same cluster
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.support import STRICT, free_port

_INSTALL = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does this)"


def postgres_bin() -> Path:
    """The newest installed major version's bin directory; skip (or fail when strict) without."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if not found:
        if STRICT:
            pytest.fail(f"PROBSERVE_STRICT_TESTS=1 and {_INSTALL}")
        pytest.skip(_INSTALL)
    return Path(found[-1]).parent


def _major(initdb: str) -> int:
    """The major version in /usr/lib/postgresql/MAJOR/bin/initdb (0 if not a number)."""
    name = Path(initdb).parent.parent.name
    return int(name) if name.isdigit() else 0


class PostgresServer:
    """One cluster in a temporary directory, listening on 127.0.0.1:``port`` only."""

    def __init__(self, directory: Path, port: int) -> None:
        """Cluster files live in ``directory`` (also the Unix socket directory)."""
        self.bin = postgres_bin()
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}")

    def init(self) -> None:
        """initdb with trust authentication (a throwaway cluster on loopback)."""
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """pg_ctl start; returns once the server accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.directory / "server.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (``fast``: connections are cut, as in an outage)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str, encoding: str | None = None) -> str:
        """A new empty database (one per test on a shared cluster), in the cluster's encoding
        or ``encoding`` (SQL_ASCII is what a cluster made without a locale has); its URL."""
        import psycopg

        options = f" ENCODING '{encoding}' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"{options if encoding else ""}'.encode())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def running(self) -> bool:
        """Whether the postmaster is up."""
        return (self.data / "postmaster.pid").exists()


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started cluster, stopped and removed afterwards."""
    postgres_bin()
    directory = Path(tempfile.mkdtemp(prefix="probserve-pg-"))
    server = PostgresServer(directory, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
