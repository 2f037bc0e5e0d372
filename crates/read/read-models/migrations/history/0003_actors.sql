-- Who issued each order command (the caller's subject from the event metadata, e.g.
-- `barista:s1:ana`), for the dashboard's per-barista figures; NULL for events recorded before
-- the log carried it.
ALTER TABLE order_status_changes ADD COLUMN actor text;

-- "This store's orders made ready on this day" (barista figures and the store's wait): a range on
-- ready_at within the store.
CREATE INDEX orders_ready_by_store ON orders (store_id, ready_at) WHERE ready_at IS NOT NULL;
