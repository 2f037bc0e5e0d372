-- `append_commits` (migration 0004) with one change: the batch's idempotency keys are looked up
-- by a statement planned for each call instead of an `EXISTS` per commit inside the function's
-- cached plan. PL/pgSQL caches a generic plan after five calls; one made while
-- `command_idempotency` was nearly empty reads the whole table (a seq scan, or a hash of it),
-- and it is kept as the table grows, so every batch got slower as keys accumulated (the gRPC
-- path fell from 1.78x to 0.37x of the baseline over two rounds of `compare`). The statement
-- below probes the primary key with the batch's keys, whatever the table's size when the
-- function was first called (test `the_key_check_probes_the_key_index_however_small_the_table_was`).
--
-- Everything else is 0004's, unchanged: the decisions, the writes, the lock and the notify.
CREATE OR REPLACE FUNCTION append_commits(
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
    stored_keys      TEXT[] := '{}';
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

    -- Which of the batch's keys are already stored. Dynamic SQL, so it is planned for each call:
    -- a cached plan is made once, when the key table may still be small enough to read whole,
    -- and kept while the table grows by orders of magnitude (a full read per batch).
    -- Skipped for a batch without keys (the planning is the cost).
    IF cardinality(array_remove(commit_keys, NULL)) > 0 THEN
        EXECUTE 'SELECT COALESCE(array_agg(idempotency_key), ''{}'') FROM command_idempotency
                 WHERE idempotency_key = ANY($1)'
            INTO stored_keys USING commit_keys;
    END IF;

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
                        OR c.idempotency_key = ANY(stored_keys)) AS key_used
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
