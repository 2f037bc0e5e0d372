-- no-transaction
-- Idempotency keys are pruned oldest first by commit time (issue 14): this index lets each
-- pruning batch find its expired keys without scanning the table. Built CONCURRENTLY so an
-- upgrade does not block commits while it indexes an existing table (hence no transaction, and
-- one statement only); IF NOT EXISTS lets a start that was interrupted be repeated.
CREATE INDEX CONCURRENTLY IF NOT EXISTS command_idempotency_committed_at
    ON command_idempotency (committed_at);
