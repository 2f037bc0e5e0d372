-- The group commit's decisions and writes in one statement (issue 16 item 3). A batch used to
-- take the position counter, check versions and keys, then write, each a round trip of its own;
-- this function does all three on the server, so a batch is `BEGIN`, one call and `COMMIT`.
--
-- The decisions are the writer's as before: commits are taken in batch order; a commit whose
-- expected version is not its aggregate's current one (counting the commits accepted before it
-- in the batch) or whose idempotency key is already stored or used earlier in the batch is a
-- conflict and writes nothing; every accepted commit gets the next gap-free positions. It
-- returns, per commit, its first global position, or NULL for a conflict. When nothing is
-- accepted nothing is written (the caller rolls back and releases the counter).
--
-- Only the writer calls it, inside its own transaction: the caller decides whether to COMMIT
-- (a caller that has gone by then is rolled back). Older binaries that still write with their
-- own statements during a rolling deploy take the same counter lock, so both can run at once.
CREATE FUNCTION append_commits(
    commit_aggregate_types   TEXT[],
    commit_aggregate_ids     TEXT[],
    commit_expected_versions BIGINT[],
    commit_event_counts      INTEGER[],
    commit_metadata          JSONB[],
    -- NULL where the commit has no idempotency key.
    commit_keys              TEXT[],
    commit_fingerprints      TEXT[],
    -- NULL where the commit takes no snapshot.
    commit_snapshots         JSONB[],
    commit_snapshot_versions INTEGER[],
    -- Every event of the batch, in commit order; `event_commits` is the 1-based index of its
    -- commit in the arrays above.
    event_commits            INTEGER[],
    event_types              TEXT[],
    event_versions           TEXT[],
    event_payloads           JSONB[]
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    commits          INTEGER := cardinality(commit_aggregate_ids);
    last_written     BIGINT;
    next_position    BIGINT;
    stored_versions  BIGINT[];
    previous_commits BIGINT[];
    keys_used        BOOLEAN[];
    versions_after   BIGINT[] := array_fill(NULL::BIGINT, ARRAY[commits]);
    first_positions  BIGINT[] := array_fill(NULL::BIGINT, ARRAY[commits]);
    current_version  BIGINT;
    written_at       TIMESTAMPTZ;
BEGIN
    -- The lock serialises writers; the statements below take their snapshots once it is held
    -- (a volatile function's statements each take a fresh one), so they see every commit that
    -- finished before ours.
    SELECT last_position INTO last_written FROM event_position FOR UPDATE;
    -- Taken once the lock is held, not when the call started (it may have waited for the lock
    -- behind another writer): commit timestamps then follow positions.
    written_at := clock_timestamp();

    -- Per commit: its aggregate's stored version, the previous commit of the same aggregate in
    -- the batch (whose outcome decides its version instead), and whether its key is taken.
    SELECT array_agg(stored ORDER BY ord), array_agg(previous ORDER BY ord),
           array_agg(key_used ORDER BY ord)
    INTO stored_versions, previous_commits, keys_used
    FROM (
        SELECT c.ord,
               COALESCE((SELECT max(e.sequence) FROM events e
                         WHERE e.aggregate_type = c.aggregate_type
                           AND e.aggregate_id = c.aggregate_id), 0) AS stored,
               lag(c.ord) OVER (PARTITION BY c.aggregate_type, c.aggregate_id ORDER BY c.ord)
                   AS previous,
               c.idempotency_key IS NOT NULL
                   AND (row_number() OVER (PARTITION BY c.idempotency_key ORDER BY c.ord) > 1
                        OR EXISTS (SELECT 1 FROM command_idempotency k
                                   WHERE k.idempotency_key = c.idempotency_key)) AS key_used
        FROM unnest(commit_aggregate_types, commit_aggregate_ids, commit_keys)
             WITH ORDINALITY AS c(aggregate_type, aggregate_id, idempotency_key, ord)
    ) decided;

    next_position := last_written + 1;
    FOR i IN 1 .. commits LOOP
        current_version := CASE WHEN previous_commits[i] IS NULL THEN stored_versions[i]
                                ELSE versions_after[previous_commits[i]] END;
        versions_after[i] := current_version;
        IF current_version = commit_expected_versions[i] AND NOT keys_used[i] THEN
            first_positions[i] := next_position;
            next_position := next_position + commit_event_counts[i];
            versions_after[i] := current_version + commit_event_counts[i];
        END IF;
    END LOOP;
    IF next_position = last_written + 1 THEN
        RETURN first_positions;
    END IF;

    INSERT INTO events (global_position, aggregate_type, aggregate_id, sequence, event_type,
                        event_version, payload, metadata, recorded_at)
    SELECT first_positions[e.commit] + e.event_offset, commit_aggregate_types[e.commit],
           commit_aggregate_ids[e.commit], commit_expected_versions[e.commit] + 1 + e.event_offset,
           e.event_type, e.event_version, e.payload, commit_metadata[e.commit],
           written_at
    FROM (SELECT u.commit, u.event_type, u.event_version, u.payload,
                 row_number() OVER (PARTITION BY u.commit ORDER BY u.ord) - 1 AS event_offset
          FROM unnest(event_commits, event_types, event_versions, event_payloads)
               WITH ORDINALITY AS u(commit, event_type, event_version, payload, ord)) e
    WHERE first_positions[e.commit] IS NOT NULL;

    INSERT INTO outbox (first_position, last_position, aggregate_type, aggregate_id,
                        first_sequence, last_sequence, committed_at)
    SELECT first_positions[c.ord], first_positions[c.ord] + c.event_count - 1, c.aggregate_type,
           c.aggregate_id, c.expected_version + 1, c.expected_version + c.event_count,
           written_at
    FROM unnest(commit_aggregate_types, commit_aggregate_ids, commit_expected_versions,
                commit_event_counts)
         WITH ORDINALITY AS c(aggregate_type, aggregate_id, expected_version, event_count, ord)
    WHERE first_positions[c.ord] IS NOT NULL;

    INSERT INTO command_idempotency (idempotency_key, request_fingerprint, aggregate_type,
                                     aggregate_id, first_sequence, last_sequence, committed_at)
    SELECT c.idempotency_key, c.fingerprint, c.aggregate_type, c.aggregate_id,
           c.expected_version + 1, c.expected_version + c.event_count, written_at
    FROM unnest(commit_keys, commit_fingerprints, commit_aggregate_types, commit_aggregate_ids,
                commit_expected_versions, commit_event_counts)
         WITH ORDINALITY AS c(idempotency_key, fingerprint, aggregate_type, aggregate_id,
                              expected_version, event_count, ord)
    WHERE first_positions[c.ord] IS NOT NULL AND c.idempotency_key IS NOT NULL;

    -- Never replaces a newer snapshot with an older one.
    INSERT INTO snapshots (aggregate_type, aggregate_id, version, payload, taken_at,
                           schema_version)
    SELECT c.aggregate_type, c.aggregate_id, c.expected_version + c.event_count, c.payload,
           written_at, c.schema_version
    FROM unnest(commit_aggregate_types, commit_aggregate_ids, commit_expected_versions,
                commit_event_counts, commit_snapshots, commit_snapshot_versions)
         WITH ORDINALITY AS c(aggregate_type, aggregate_id, expected_version, event_count,
                              payload, schema_version, ord)
    WHERE first_positions[c.ord] IS NOT NULL AND c.payload IS NOT NULL
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
        SET version = EXCLUDED.version, payload = EXCLUDED.payload, taken_at = EXCLUDED.taken_at,
            schema_version = EXCLUDED.schema_version
        WHERE snapshots.version < EXCLUDED.version;

    UPDATE event_position SET last_position = next_position - 1;
    -- Delivered when the transaction commits (not at all if it rolls back): wakes the relay
    -- and the commit feeds for the new outbox rows.
    PERFORM pg_notify('orderpipe_outbox', '');
    RETURN first_positions;
END $$;
