-- The event store: the source of truth of orderpipe (BRIEF §3.1).

-- Every event of every aggregate. `global_position` is gap-free and follows commit order because
-- each committing transaction takes its range from `event_position` while holding that row's
-- lock (see below); a plain sequence would not do: transactions commit out of sequence order.
CREATE TABLE events (
    global_position BIGINT      PRIMARY KEY,
    aggregate_type  TEXT        NOT NULL,
    aggregate_id    TEXT        NOT NULL,
    sequence        BIGINT      NOT NULL CHECK (sequence > 0),
    event_type      TEXT        NOT NULL,
    event_version   TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    -- Optimistic concurrency per aggregate, and the index that loads one aggregate's stream.
    CONSTRAINT events_aggregate_sequence UNIQUE (aggregate_type, aggregate_id, sequence)
);

-- One row: the last global position handed out. Locking it serialises commits (not the batching
-- inside them), which is what makes positions gap-free in commit order across several writers.
CREATE TABLE event_position (
    singleton     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_position BIGINT  NOT NULL
);
INSERT INTO event_position (singleton, last_position) VALUES (TRUE, 0);

-- One row per commit, written in the same transaction as its events, removed by the relay once
-- Kinesis acknowledged the commit's record.
CREATE TABLE outbox (
    first_position BIGINT      PRIMARY KEY,
    last_position  BIGINT      NOT NULL,
    aggregate_type TEXT        NOT NULL,
    aggregate_id   TEXT        NOT NULL,
    first_sequence BIGINT      NOT NULL,
    last_sequence  BIGINT      NOT NULL,
    committed_at   TIMESTAMPTZ NOT NULL
);

-- The latest snapshot of an aggregate, exactly as the command context held it after the commit.
CREATE TABLE snapshots (
    aggregate_type TEXT        NOT NULL,
    aggregate_id   TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    payload        JSONB       NOT NULL,
    taken_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- The client idempotency key of every commit, so a retry returns the first outcome.
CREATE TABLE command_idempotency (
    idempotency_key     TEXT        PRIMARY KEY,
    request_fingerprint TEXT        NOT NULL,
    aggregate_type      TEXT        NOT NULL,
    aggregate_id        TEXT        NOT NULL,
    first_sequence      BIGINT      NOT NULL,
    last_sequence       BIGINT      NOT NULL,
    committed_at        TIMESTAMPTZ NOT NULL
);
