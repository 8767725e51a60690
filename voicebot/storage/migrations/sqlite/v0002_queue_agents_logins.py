"""SQLite schema version 2: the live-agent queue, callbacks, agents, logins, the audit log, the change log.

Times the store makes are ISO 8601 UTC text of one width (so text order is time
order); an agent's queues are a JSON list.
"""

from voicebot.storage.migrations import run_script

revision = "0002"
down_revision = "0001"

SQL = """
ALTER TABLE calls ADD COLUMN recording_path TEXT;

CREATE INDEX calls_updated ON calls (updated_at);

CREATE TABLE queue_entries (
    entry_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id      TEXT NOT NULL,
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    reason       TEXT NOT NULL DEFAULT '',
    caller_id    TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT 'waiting'
                 CHECK (state IN ('waiting', 'connecting', 'connected', 'abandoned', 'callback', 'done')),
    enqueued_at  TEXT NOT NULL,
    agent        TEXT,
    wait_s       REAL,
    connected_at TEXT,
    ended_at     TEXT,
    handled_s    REAL,
    note         TEXT NOT NULL DEFAULT ''
);

CREATE INDEX queue_waiting ON queue_entries (queue, priority DESC, enqueued_at, entry_id) WHERE state = 'waiting';
CREATE INDEX queue_live ON queue_entries (state, enqueued_at);
CREATE INDEX queue_handled ON queue_entries (queue, ended_at) WHERE state = 'done';
CREATE INDEX queue_call ON queue_entries (call_id);

CREATE TABLE callbacks (
    callback_id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id     TEXT NOT NULL,
    queue       TEXT NOT NULL,
    number      TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'claimed', 'done', 'failed')),
    claimed_by  TEXT,
    note        TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX callbacks_by_state ON callbacks (state, created_at);

CREATE TABLE agents (
    name        TEXT PRIMARY KEY,
    sip_uri     TEXT NOT NULL,
    queues      TEXT NOT NULL DEFAULT '[]',
    state       TEXT NOT NULL DEFAULT 'away' CHECK (state IN ('available', 'away', 'busy')),
    state_since TEXT NOT NULL
);

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('supervisor', 'agent')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    label      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);

CREATE INDEX api_tokens_user ON api_tokens (user_name);

CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_name);

CREATE TABLE audit_log (
    audit_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    user_name TEXT NOT NULL,
    action    TEXT NOT NULL,
    call_id   TEXT,
    detail    TEXT NOT NULL DEFAULT ''
);

CREATE INDEX audit_call ON audit_log (call_id);

-- Every queue, callback and agent change, for the change feeds of every process sharing the file.
CREATE TABLE change_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    payload TEXT NOT NULL
);
"""


def upgrade() -> None:
    run_script(SQL)
