"""PostgreSQL schema version 2: the live-agent queue, callbacks, agents, logins, the audit log.

Times are timestamptz, an agent's queues a text[]. Changes travel by
LISTEN/NOTIFY, so there is no change log table here.
"""

from voicebot.storage.migrations import run_script

revision = "0002"
down_revision = "0001"

SQL = """
ALTER TABLE calls ADD COLUMN recording_path text;

CREATE INDEX calls_updated ON calls (updated_at);

CREATE TABLE queue_entries (
    entry_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id      text NOT NULL,
    queue        text NOT NULL,
    priority     integer NOT NULL DEFAULT 0,
    reason       text NOT NULL DEFAULT '',
    caller_id    text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT 'waiting'
                 CHECK (state IN ('waiting', 'connecting', 'connected', 'abandoned', 'callback', 'done')),
    enqueued_at  timestamptz NOT NULL,
    agent        text,
    wait_s       double precision,
    connected_at timestamptz,
    ended_at     timestamptz,
    handled_s    double precision,
    note         text NOT NULL DEFAULT ''
);

CREATE INDEX queue_waiting ON queue_entries (queue, priority DESC, enqueued_at, entry_id) WHERE state = 'waiting';
CREATE INDEX queue_live ON queue_entries (state, enqueued_at);
CREATE INDEX queue_handled ON queue_entries (queue, ended_at) WHERE state = 'done';
CREATE INDEX queue_call ON queue_entries (call_id);

CREATE TABLE callbacks (
    callback_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id     text NOT NULL,
    queue       text NOT NULL,
    number      text NOT NULL,
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'claimed', 'done', 'failed')),
    claimed_by  text,
    note        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX callbacks_by_state ON callbacks (state, created_at);

CREATE TABLE agents (
    name        text PRIMARY KEY,
    sip_uri     text NOT NULL,
    queues      text[] NOT NULL DEFAULT '{}',
    state       text NOT NULL DEFAULT 'away' CHECK (state IN ('available', 'away', 'busy')),
    state_since timestamptz NOT NULL
);

CREATE INDEX agents_queues ON agents USING gin (queues);

CREATE TABLE users (
    name          text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('supervisor', 'agent')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL,
    disabled      boolean NOT NULL DEFAULT false
);

CREATE TABLE api_tokens (
    token_hash text PRIMARY KEY,
    user_name  text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    label      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);

CREATE INDEX api_tokens_user ON api_tokens (user_name);

CREATE TABLE sessions (
    session_hash text PRIMARY KEY,
    user_name    text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_name);

CREATE TABLE audit_log (
    audit_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    user_name text NOT NULL,
    action    text NOT NULL,
    call_id   text,
    detail    text NOT NULL DEFAULT ''
);

CREATE INDEX audit_call ON audit_log (call_id);
"""


def upgrade() -> None:
    run_script(SQL)
