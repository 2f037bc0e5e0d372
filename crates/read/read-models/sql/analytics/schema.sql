-- Analytics (Amazon Redshift, a PostgreSQL database stands in locally). Only SQL both accept:
-- CREATE TABLE IF NOT EXISTS, VARCHAR / SMALLINT / INTEGER / BIGINT / BOOLEAN / DATE /
-- TIMESTAMP, informational primary keys (Redshift does not enforce them, PostgreSQL does).
-- Tables are unqualified: the projection selects its schema with set_config('search_path').
-- Statements end with a semicolon; comment lines are dropped before splitting.

CREATE TABLE IF NOT EXISTS applied_sequences (
    aggregate_type VARCHAR(16) NOT NULL,
    aggregate_id   VARCHAR(64) NOT NULL,
    last_sequence  BIGINT      NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

CREATE TABLE IF NOT EXISTS dim_store (
    store_id      VARCHAR(64) NOT NULL,
    first_seen_at TIMESTAMP   NOT NULL,
    PRIMARY KEY (store_id)
);

-- The menu as it is now (name, category, price, availability).
CREATE TABLE IF NOT EXISTS dim_item (
    sku         VARCHAR(32)  NOT NULL,
    name        VARCHAR(320),
    category    VARCHAR(16),
    price_cents BIGINT,
    available   BOOLEAN,
    updated_at  TIMESTAMP    NOT NULL,
    PRIMARY KEY (sku)
);

-- One row per UTC hour that has facts: hour_key = YYYYMMDDHH.
CREATE TABLE IF NOT EXISTS dim_hour (
    hour_key    BIGINT    NOT NULL,
    hour_start  TIMESTAMP NOT NULL,
    day         DATE      NOT NULL,
    hour_of_day SMALLINT  NOT NULL,
    day_of_week SMALLINT  NOT NULL,
    month       SMALLINT  NOT NULL,
    year        SMALLINT  NOT NULL,
    PRIMARY KEY (hour_key)
);

-- One row per order, replaced as the order moves on (staging + delete/insert).
CREATE TABLE IF NOT EXISTS fact_orders (
    order_id      VARCHAR(36)  NOT NULL,
    store_id      VARCHAR(64)  NOT NULL,
    customer_id   VARCHAR(64)  NOT NULL,
    hour_key      BIGINT       NOT NULL,
    placed_at     TIMESTAMP    NOT NULL,
    status        VARCHAR(16)  NOT NULL,
    total_cents   BIGINT       NOT NULL,
    line_count    INTEGER      NOT NULL,
    item_quantity INTEGER      NOT NULL,
    accepted_at   TIMESTAMP,
    preparing_at  TIMESTAMP,
    ready_at      TIMESTAMP,
    ended_at      TIMESTAMP,
    prep_seconds  BIGINT,
    end_reason    VARCHAR(800),
    PRIMARY KEY (order_id)
);

CREATE TABLE IF NOT EXISTS fact_order_items (
    order_id            VARCHAR(36) NOT NULL,
    line_no             INTEGER     NOT NULL,
    store_id            VARCHAR(64) NOT NULL,
    sku                 VARCHAR(32) NOT NULL,
    hour_key            BIGINT      NOT NULL,
    placed_at           TIMESTAMP   NOT NULL,
    quantity            INTEGER     NOT NULL,
    unit_price_cents    BIGINT      NOT NULL,
    line_total_cents    BIGINT      NOT NULL,
    customisation_count INTEGER     NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE IF NOT EXISTS fact_loyalty (
    customer_id  VARCHAR(64)  NOT NULL,
    sequence     BIGINT       NOT NULL,
    entry_type   VARCHAR(16)  NOT NULL,
    points       BIGINT       NOT NULL,
    order_id     VARCHAR(36),
    amount_cents BIGINT,
    tier         VARCHAR(16),
    hour_key     BIGINT       NOT NULL,
    recorded_at  TIMESTAMP    NOT NULL,
    PRIMARY KEY (customer_id, sequence)
);

CREATE TABLE IF NOT EXISTS fact_stock_movements (
    store_id    VARCHAR(64) NOT NULL,
    sequence    BIGINT      NOT NULL,
    line_no     INTEGER     NOT NULL,
    sku         VARCHAR(32) NOT NULL,
    movement    VARCHAR(24) NOT NULL,
    quantity    BIGINT      NOT NULL,
    order_id    VARCHAR(36),
    hour_key    BIGINT      NOT NULL,
    recorded_at TIMESTAMP   NOT NULL,
    PRIMARY KEY (store_id, sequence, line_no)
);

-- Staging tables, one per loaded table, created once with the schema and reused by every flush
-- (Redshift commits DDL slowly and serialises it in its commit queue, so no flush creates or
-- drops a table). Loads run one at a time (each flush first takes LOCK applied_sequences), so
-- one set is enough; a flush fills them, merges them into their targets and empties them again
-- in its own transaction, so they are empty whenever no flush runs.
CREATE TABLE IF NOT EXISTS stage_applied_sequences (LIKE applied_sequences);
CREATE TABLE IF NOT EXISTS stage_dim_store (LIKE dim_store);
CREATE TABLE IF NOT EXISTS stage_dim_item (LIKE dim_item);
CREATE TABLE IF NOT EXISTS stage_dim_hour (LIKE dim_hour);
CREATE TABLE IF NOT EXISTS stage_fact_orders (LIKE fact_orders);
CREATE TABLE IF NOT EXISTS stage_fact_order_items (LIKE fact_order_items);
CREATE TABLE IF NOT EXISTS stage_fact_loyalty (LIKE fact_loyalty);
CREATE TABLE IF NOT EXISTS stage_fact_stock_movements (LIKE fact_stock_movements);
