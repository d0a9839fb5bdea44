-- Dev-mode event store. SQLite runs one write transaction at a time, so `position` order is commit order
-- and `tx_id` is always 0.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id           INTEGER NOT NULL DEFAULT 0,
    event_id        TEXT    NOT NULL UNIQUE,
    command_id      TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_by_command ON events (command_id);

CREATE TABLE commands (
    command_id      TEXT PRIMARY KEY,
    actor           TEXT NOT NULL,
    command_type    TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('committed', 'rejected')),
    rejection_code  TEXT,
    reason          TEXT,
    recorded_at     TEXT NOT NULL
);
