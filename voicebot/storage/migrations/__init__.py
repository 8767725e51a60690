"""Schema migrations: numbered SQL scripts per backend, applied in order, each once.

``<backend>/vNNNN_what_it_does.py`` holds the script in ``SQL``; the number is
the schema version it brings the database to. (Python modules rather than
.sql files because modules are packaged without extra setuptools settings.)
A database records what it has in a ``schema_version`` table; opening a store
applies the scripts above that. Never edit a script once it has shipped; add
the next number instead.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass

from voicebot.storage.base import StoreError

_NAME = re.compile(r"^v(\d{4})_([a-z0-9_]+)$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """Every migration for ``backend`` ("sqlite", later "postgres"), lowest version first."""
    try:
        package = importlib.import_module(f"{__name__}.{backend}")
    except ModuleNotFoundError:
        raise StoreError(f"no schema migrations for the {backend!r} store") from None
    found: dict[int, Migration] = {}
    for info in pkgutil.iter_modules(package.__path__):
        m = _NAME.match(info.name)
        if m is None:
            continue
        version = int(m.group(1))
        if version in found:
            raise StoreError(f"two {backend} migrations numbered {version:04d}")
        sql = importlib.import_module(f"{package.__name__}.{info.name}").SQL
        found[version] = Migration(version, m.group(2), sql)
    ordered = [found[v] for v in sorted(found)]
    if [m.version for m in ordered] != list(range(1, len(ordered) + 1)):
        raise StoreError(f"{backend} migrations must be numbered v0001, v0002, ... without gaps")
    return ordered
