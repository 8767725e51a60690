"""PostgreSQL schema version 1: calls, their turns, intake forms and the reference number sequence.

The call's own start and end are kept as the report's text, so they read back
exactly as written (as on SQLite); times the store makes are timestamptz.
``row_no`` keeps insertion order, SQLite's rowid, for ties in the listings.
"""

from voicebot.storage.migrations import run_script

revision = "0001"
down_revision = None

SQL = """
CREATE TABLE calls (
    call_id         text PRIMARY KEY,
    row_no          bigint GENERATED ALWAYS AS IDENTITY,
    name            text NOT NULL,
    caller_id       text NOT NULL DEFAULT '',
    engine          text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended', 'interrupted')),
    outcome         text CHECK (outcome IN ('completed', 'transferred', 'abandoned')),
    transfer_reason text,
    transfer_queue  text,
    latency_ms      json NOT NULL DEFAULT '[]',
    started_at      text NOT NULL,
    ended_at        text,
    duration_s      double precision,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX calls_newest ON calls (started_at DESC, row_no DESC);
CREATE INDEX calls_active ON calls (status) WHERE status = 'active';

CREATE TABLE turns (
    call_id     text NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    speaker     text NOT NULL CHECK (speaker IN ('bot', 'caller')),
    text        text NOT NULL,
    start_s     double precision NOT NULL,
    end_s       double precision NOT NULL,
    intent      text,
    confidence  double precision NOT NULL DEFAULT 0,
    interrupted boolean NOT NULL DEFAULT false,
    counted     boolean NOT NULL DEFAULT true,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE intakes (
    call_id      text NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    form         text NOT NULL,
    row_no       bigint GENERATED ALWAYS AS IDENTITY,
    status       text NOT NULL CHECK (status IN ('submitted', 'incomplete')),
    fields       json NOT NULL DEFAULT '{}',
    reference    text UNIQUE,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    submitted_at timestamptz,
    PRIMARY KEY (call_id, form)
);

CREATE INDEX intakes_newest ON intakes (created_at DESC, row_no DESC);

-- A sequence never hands out a number twice, even after rows are deleted; the first reference is HA100001.
CREATE TABLE reference_numbers (
    number    bigint GENERATED ALWAYS AS IDENTITY (START WITH 100001) PRIMARY KEY,
    call_id   text NOT NULL,
    issued_at timestamptz NOT NULL
);
"""


def upgrade() -> None:
    run_script(SQL)
