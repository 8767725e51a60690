"""SQLite schema version 1: calls, their turns, intake forms and the reference number sequence.

Times are ISO 8601 UTC text; lists and field maps are JSON text. The SQL is as
shipped by the hand-rolled runner this replaced: a database it made counts as
at this revision.
"""

from voicebot.storage.migrations import run_script

revision = "0001"
down_revision = None

SQL = """
CREATE TABLE calls (
    call_id         TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    caller_id       TEXT NOT NULL DEFAULT '',
    engine          TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended', 'interrupted')),
    outcome         TEXT CHECK (outcome IN ('completed', 'transferred', 'abandoned')),
    transfer_reason TEXT,
    transfer_queue  TEXT,
    latency_ms      TEXT NOT NULL DEFAULT '[]',
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    duration_s      REAL,
    updated_at      TEXT NOT NULL
);

CREATE INDEX calls_newest ON calls (started_at DESC);
CREATE INDEX calls_active ON calls (status) WHERE status = 'active';

CREATE TABLE turns (
    call_id     TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    speaker     TEXT NOT NULL CHECK (speaker IN ('bot', 'caller')),
    text        TEXT NOT NULL,
    start_s     REAL NOT NULL,
    end_s       REAL NOT NULL,
    intent      TEXT,
    confidence  REAL NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0,
    counted     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE intakes (
    call_id      TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    form         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('submitted', 'incomplete')),
    fields       TEXT NOT NULL DEFAULT '{}',
    reference    TEXT UNIQUE,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    submitted_at TEXT,
    PRIMARY KEY (call_id, form)
);

CREATE INDEX intakes_newest ON intakes (created_at DESC);

-- AUTOINCREMENT never reuses a number, even after rows are deleted.
CREATE TABLE reference_numbers (
    number    INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id   TEXT NOT NULL,
    issued_at TEXT NOT NULL
);

-- The first reference is HA100001.
INSERT INTO sqlite_sequence (name, seq) VALUES ('reference_numbers', 100000);
"""


def upgrade() -> None:
    run_script(SQL)
