"""Schema migrations for both backends, run by Alembic.

Each backend has its own linear history, ``<backend>/vNNNN_what_it_does.py``
with ``revision = "NNNN"``: the number is the schema version, and the same
number means the same data on SQLite and PostgreSQL. Scripts are plain SQL
(the store is written in SQL, not with an ORM) run through ``run_script``.
Never edit a script once it has shipped; add the next number instead.

Why Alembic: it is well kept, it runs on a connection we hand it (so the whole
upgrade is one transaction, taken under a lock: SQLite's write lock,
PostgreSQL's advisory lock, so processes starting together migrate once), and
it reaches PostgreSQL through SQLAlchemy's asyncpg dialect, the driver the
store uses anyway. (yoyo-migrations would need a second, blocking PostgreSQL
driver, and its lock table outlives a killed process.)

A SQLite file made before Alembic has a ``schema_version`` table instead of
``alembic_version``; it is stamped at its version and upgraded from there.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from voicebot.storage.base import StoreError

HERE = Path(__file__).resolve().parent
BACKENDS = ("sqlite", "postgres")
#: the hand-rolled runner's version table, in SQLite files made before Alembic
LEGACY_TABLE = "schema_version"
#: PostgreSQL advisory lock key held while migrating ("voicebot" in ASCII, truncated to 63 bits)
PG_MIGRATION_LOCK = 0x766F696365626F74


def run_script(sql: str) -> None:
    """Run a migration's SQL, one statement at a time (drivers take one per call); inside ``upgrade()``."""
    from alembic import op

    bind = op.get_bind()
    for statement in sql.split(";\n"):
        lines = [ln for ln in statement.strip().splitlines() if not ln.lstrip().startswith("--")]
        if lines:
            bind.exec_driver_sql("\n".join(lines))


@cache
def _script(backend: str) -> Any:
    from alembic.script import ScriptDirectory

    if backend not in BACKENDS:
        raise StoreError(f"no schema migrations for the {backend!r} store")
    return ScriptDirectory(str(HERE), version_locations=[str(HERE / backend)])


def preload(backend: str) -> None:
    """Import Alembic, SQLAlchemy and the scripts (a good part of a second, the first time): call it in a
    thread before an upgrade that runs on the event loop, so the loop is not held that long."""
    import alembic.migration  # noqa: F401
    import alembic.operations  # noqa: F401
    import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401
    import sqlalchemy.ext.asyncio  # noqa: F401

    versions(backend)


def latest_version(backend: str) -> int:
    """The schema version this voicebot brings a ``backend`` database to."""
    return int(_script(backend).get_current_head())


def versions(backend: str) -> list[int]:
    """Every schema version of ``backend``, lowest first."""
    return sorted(int(s.revision) for s in _script(backend).walk_revisions())


def upgrade(connection: Any, backend: str, where: str) -> tuple[int, int]:
    """Bring the database on ``connection`` (a SQLAlchemy connection inside a transaction the caller
    commits) to the latest version; returns (version before, version after). ``where`` names it in errors."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from alembic.util import CommandError
    from sqlalchemy import inspect

    script = _script(backend)
    latest = latest_version(backend)
    quiet = logging.getLogger("alembic")
    if quiet.level == logging.NOTSET:  # its per-plugin INFO lines; the store logs what it upgraded itself
        quiet.setLevel(logging.WARNING)
    ctx = MigrationContext.configure(
        connection, opts={"script": script, "fn": lambda rev, _ctx: script._upgrade_revs("head", rev)})
    current = ctx.get_current_revision()
    if current is None and backend == "sqlite" and inspect(connection).has_table(LEGACY_TABLE):
        legacy = connection.exec_driver_sql(f"SELECT MAX(version) FROM {LEGACY_TABLE}").scalar() or 0
        if legacy > latest:
            raise StoreError(f"{where} has schema version {legacy}, newer than this voicebot knows ({latest}); "
                             "upgrade voicebot")
        if legacy:
            ctx.stamp(script, f"{legacy:04d}")
        connection.exec_driver_sql(f"DROP TABLE {LEGACY_TABLE}")
        current = ctx.get_current_revision()
    before = int(current) if current else 0
    try:
        known = current is None or script.get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        raise StoreError(f"{where} has schema version {before}, newer than this voicebot knows ({latest}); "
                         "upgrade voicebot")
    try:
        with Operations.context(ctx):
            ctx.run_migrations()
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - any failing script is one line for the operator
        raise StoreError(f"{where}: migration to schema version {latest} failed: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return before, latest
