"""The store's backends for tests: SQLite files, and a real throwaway PostgreSQL cluster.

The cluster is Debian's ``postgresql`` (initdb, pg_ctl) in a temporary directory
on a free loopback port, started once per test session and removed after it;
each test gets a database of its own. PostgreSQL refuses to run as root, so
as root its programs run as the ``postgres`` user (through setpriv). No system
service is needed or touched.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from voicebot.storage import SqliteCallStore
from voicebot.storage.base import CallStore

BACKENDS = ("sqlite", "postgres")
#: server settings for a throwaway cluster: durability is not wanted here, speed is
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")


def postgres_bindir() -> Path | None:
    """Debian keeps initdb and pg_ctl out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(dirs[-1]).parent if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A private PostgreSQL server; ``database()`` makes a fresh database and returns its URL."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="voicebot-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [*self._prefix, str(self.bindir / program), *args]
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")
        return done

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--no-sync", "--no-instructions")
        options = " ".join([f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1",
                            *(f"-c {s}" for s in FAST_SETTINGS)])
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        name = f"test_{next(self._names)}"
        self._psql(f"CREATE DATABASE {name}")
        return name

    def drop(self, name: str) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _psql(self, sql: str) -> None:
        self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", "-d", "postgres", "-c", sql)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A real PostgreSQL for the session (skipped with a reason where the server is not installed)."""
    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server not installed (Debian package postgresql; make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresCluster(bindir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database."""
    name = pg_cluster.database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop(name)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database on each backend: a test that takes it runs once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'voicebot.sqlite3'}"
    return request.getfixturevalue("pg_url")


def make_store(url: str, **options: Any) -> CallStore:
    """A store on ``url`` (not opened), with options such as ``now=`` or ``recover=``; SQLite's
    ``poll_interval_s`` is dropped for PostgreSQL, which is told of changes instead."""
    if url.startswith("sqlite:///"):
        return SqliteCallStore(Path(url[len("sqlite:///"):]), **options)
    from voicebot.storage.postgres import PostgresCallStore

    options.pop("poll_interval_s", None)
    return PostgresCallStore(url, **options)


async def execute_sql(url: str, sql: str, *params: Any) -> list[tuple]:
    """Run one statement on the database behind ``url`` with the backend's own driver, outside the store
    (to set up what a store would not write, or to look at what it wrote); returns the rows."""
    if url.startswith("sqlite:///"):
        import asyncio
        import sqlite3

        def run() -> list[tuple]:
            with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as db, db:
                return db.execute(sql.replace("$", "?"), params).fetchall()

        return await asyncio.get_running_loop().run_in_executor(None, run)
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *params)]
    finally:
        await conn.close()
