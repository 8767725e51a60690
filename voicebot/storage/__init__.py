"""Where calls and applications are kept: a repository interface and its backends.

Calls left open by a crash are marked ``status = "interrupted"`` with outcome
``"abandoned"`` when the store next opens; their forms stay ``incomplete``
(a form submitted before the crash keeps its reference).
"""

from __future__ import annotations

from pathlib import Path

from voicebot.storage.base import (
    MAX_LIST_LIMIT, ApplicationRecord, CallRecord, CallStatus, CallStore, CallSummary, StoreError,
)
from voicebot.storage.sqlite import SqliteCallStore

#: the SQLite file's name inside Settings.data_dir
SQLITE_FILE = "voicebot.sqlite3"


def default_store(data_dir: Path) -> CallStore:
    """The zero set-up store: one SQLite file in the data directory (open it before use)."""
    return SqliteCallStore(Path(data_dir) / SQLITE_FILE)


__all__ = [
    "MAX_LIST_LIMIT", "SQLITE_FILE", "ApplicationRecord", "CallRecord", "CallStatus", "CallStore", "CallSummary",
    "SqliteCallStore", "StoreError", "default_store",
]
