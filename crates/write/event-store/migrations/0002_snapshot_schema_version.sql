-- The schema version of each snapshot's payload (issue 14): a snapshot whose version is not the
-- one the loading build declares for its aggregate type is ignored and the events replayed.
-- Snapshots taken before versions existed (and any an older binary still writes during a
-- rolling deploy, which does not name the column) get 0, which no aggregate type declares, so
-- they are replayed once and replaced by the next commit.
ALTER TABLE snapshots ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 0;
