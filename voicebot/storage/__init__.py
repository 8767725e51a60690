"""Where calls, applications, the live-agent queue, agents and logins are kept: a repository interface
and its backends, SQLite (one file, zero set-up) and PostgreSQL (several processes, one queue).

Calls left open by a crash are marked ``status = "interrupted"`` with outcome
``"abandoned"`` when the store next opens; their forms stay ``incomplete``
(a form submitted before the crash keeps its reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from voicebot.storage.base import (
    MAX_LIST_LIMIT, ApplicationRecord, CallRecord, CallStatus, CallStore, CallSummary, StoreError,
)
from voicebot.storage.feed import ChangeFeed
from voicebot.storage.records import (
    DEFAULT_QUEUE, Agent, AgentChange, AgentState, ApiToken, AuditEntry, CallChange, Callback, CallbackChange,
    CallbackState,
    ChangesMissed, LoginSession, QueueChange, QueueEntry, QueuePosition, QueueState, RetentionReport, Role,
    StoreChange, User,
)
from voicebot.storage.sqlite import SqliteCallStore

if TYPE_CHECKING:
    from voicebot.config import Settings

#: the SQLite file's name inside Settings.data_dir
SQLITE_FILE = "voicebot.sqlite3"
SQLITE_URL = "sqlite:///"


def default_store(data_dir: Path) -> CallStore:
    """The zero set-up store: one SQLite file in the data directory (open it before use)."""
    return SqliteCallStore(Path(data_dir) / SQLITE_FILE)


def open_store(settings: "Settings", *, recover: bool = True) -> CallStore:
    """The store ``settings.store.url`` names, to be opened with ``async with open_store(settings) as store``.

    Empty: the SQLite file in the data directory; ``sqlite:///PATH``: that file;
    ``postgresql://...``: PostgreSQL. ``recover=False`` for a process that must not
    mark its siblings' calls interrupted (the service's call workers).
    """
    url = settings.store.url
    if not url:
        return SqliteCallStore(settings.data_dir / SQLITE_FILE, recover=recover)
    if url.startswith(SQLITE_URL):
        return SqliteCallStore(Path(url[len(SQLITE_URL):]).expanduser(), recover=recover)
    from voicebot.storage.postgres import PostgresCallStore

    return PostgresCallStore(url, recover=recover)


__all__ = [
    "DEFAULT_QUEUE", "MAX_LIST_LIMIT", "SQLITE_FILE", "Agent", "AgentChange", "AgentState", "ApiToken",
    "ApplicationRecord", "AuditEntry", "CallChange", "CallRecord", "CallStatus", "CallStore", "CallSummary", "Callback",
    "CallbackChange", "CallbackState", "ChangeFeed", "ChangesMissed", "LoginSession", "QueueChange", "QueueEntry",
    "QueuePosition", "QueueState", "RetentionReport", "Role", "SqliteCallStore", "StoreChange", "StoreError", "User",
    "default_store", "open_store",
]
