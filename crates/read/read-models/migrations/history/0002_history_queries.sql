-- What the history queries (ListOrders, ListLoyaltyTransactions) need.

-- How far the view has come along the log: the newest commit it applied (by global position)
-- and when that commit was stored. One row, moved in the same statement as the rows, so a
-- reader sees the data and its freshness from one snapshot. Only a larger position replaces
-- it: shards apply out of global order, and a redelivered commit must not move it back.
CREATE TABLE view_progress (
    only_row          boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    last_position     bigint      NOT NULL,
    last_committed_at timestamptz NOT NULL
);

-- Keyset pagination, newest first: the order id breaks ties between orders placed in the same
-- microsecond, so "after this row" is one index range. They replace the indexes of 0001,
-- which are their prefixes. IF NOT EXISTS: on a large table an operator builds them first with
-- CREATE INDEX CONCURRENTLY (not allowed inside this migration's transaction), and this
-- migration then only drops the old ones.
CREATE INDEX IF NOT EXISTS orders_by_customer_newest
    ON orders (customer_id, placed_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS orders_by_store_newest ON orders (store_id, placed_at DESC, order_id DESC);
DROP INDEX IF EXISTS orders_by_customer;
DROP INDEX IF EXISTS orders_by_store_and_time;
