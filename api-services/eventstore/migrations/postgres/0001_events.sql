-- The event store. `position` is assigned at insert time, which is not commit order; `tx_id` records the
-- inserting transaction so global readers can stop below the oldest transaction still running (gap safety).
CREATE TABLE events (
    position        BIGSERIAL PRIMARY KEY,
    tx_id           BIGINT      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id        UUID        NOT NULL UNIQUE,
    command_id      UUID        NOT NULL,
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version > 0),
    event_type      TEXT        NOT NULL,
    schema_version  SMALLINT    NOT NULL,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_global_order ON events (tx_id, position);
CREATE INDEX events_by_command ON events (command_id);

-- One row per decided command: the idempotency record and what `GET /v1/commands/{id}` reports.
CREATE TABLE commands (
    command_id      UUID        PRIMARY KEY,
    actor           TEXT        NOT NULL,
    command_type    TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('committed', 'rejected')),
    rejection_code  TEXT,
    reason          TEXT,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Used only in a backup store: commands accepted while the primary store was down, in arrival order.
CREATE TABLE parked_commands (
    seq             BIGSERIAL   PRIMARY KEY,
    command_id      UUID        NOT NULL UNIQUE,
    envelope        JSONB       NOT NULL,
    parked_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
