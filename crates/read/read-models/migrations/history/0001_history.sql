-- Order history (Aurora PostgreSQL): what a support agent or a customer's order list reads.
-- Tables are created unqualified: the projection runs this with search_path set to its own
-- schema, so replay can build the same tables in a fresh schema and swap it in.

-- The idempotency marker: the last sequence applied per aggregate, written in the same
-- transaction as the rows below.
CREATE TABLE applied_sequences (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    last_sequence  bigint NOT NULL CHECK (last_sequence > 0),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

CREATE TABLE orders (
    order_id            uuid        PRIMARY KEY,
    store_id            text        NOT NULL,
    customer_id         text        NOT NULL,
    status              text        NOT NULL,
    note                text        NOT NULL,
    total_cents         bigint      NOT NULL,
    placed_at           timestamptz NOT NULL,
    accepted_at         timestamptz,
    payment_captured_at timestamptz,
    payment_id          text,
    captured_cents      bigint,
    payment_declined    boolean     NOT NULL DEFAULT false,
    preparing_at        timestamptz,
    ready_at            timestamptz,
    ended_at            timestamptz,
    end_reason          text,
    refund_due          boolean
);
-- "This customer's orders, newest first".
CREATE INDEX orders_by_customer ON orders (customer_id, placed_at DESC);
-- "This store's orders on this day": a range on placed_at within the store.
CREATE INDEX orders_by_store_and_time ON orders (store_id, placed_at);

CREATE TABLE order_items (
    order_id         uuid    NOT NULL REFERENCES orders (order_id),
    line_no          integer NOT NULL,
    sku              text    NOT NULL,
    name             text    NOT NULL,
    quantity         integer NOT NULL,
    customisations   text[]  NOT NULL,
    unit_price_cents bigint  NOT NULL,
    line_total_cents bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- Every event of an order, with the status it led to (NULL for payment events).
CREATE TABLE order_status_changes (
    order_id   uuid        NOT NULL REFERENCES orders (order_id),
    sequence   bigint      NOT NULL,
    event_type text        NOT NULL,
    status     text,
    changed_at timestamptz NOT NULL,
    detail     text,
    PRIMARY KEY (order_id, sequence)
);

-- Points earned (+), redeemed (-) and tier upgrades (0 points) per customer; the balance is
-- the sum of points.
CREATE TABLE loyalty_ledger (
    customer_id  text        NOT NULL,
    sequence     bigint      NOT NULL,
    entry_type   text        NOT NULL,
    points       bigint      NOT NULL,
    order_id     uuid,
    amount_cents bigint,
    tier         text,
    reference    text,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, sequence)
);
CREATE INDEX loyalty_ledger_by_order ON loyalty_ledger (order_id) WHERE order_id IS NOT NULL;

-- Every stock change per store and SKU: counts, deliveries, corrections, reservations and
-- their release or consumption, low-stock signals. One row per line of a multi-line event.
CREATE TABLE stock_movements (
    store_id    text        NOT NULL,
    sequence    bigint      NOT NULL,
    line_no     integer     NOT NULL,
    sku         text        NOT NULL,
    movement    text        NOT NULL,
    quantity    bigint      NOT NULL,
    order_id    uuid,
    reason      text,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (store_id, sequence, line_no)
);
-- "This store's stock changes on this day" and "this SKU's movements at this store".
CREATE INDEX stock_movements_by_store_and_time ON stock_movements (store_id, recorded_at);
CREATE INDEX stock_movements_by_store_sku ON stock_movements (store_id, sku, recorded_at);
