//! Barista and store performance for one UTC business day, from the PostgreSQL history (not the
//! DynamoDB view: percentiles need every order's times, which SQL ranks in one pass).
//!
//! Who did what comes from the timeline's `actor`: the subject of whoever issued
//! `StartPreparing` / `MarkReady` (the command's metadata, carried by the log). An order counts
//! as prepared by whoever marked it ready; its prep time runs from the start of its preparation
//! (whoever started it) to ready. Percentiles are nearest-rank (`percentile_disc`): always a
//! time some order really took.

use serde::Serialize;

use crate::history::OrderHistoryReader;

/// Per actor: orders started and made ready on the day at the store, and the prep times of the
/// orders they made ready. The day's orders are found through `orders_by_store_and_time`
/// (placed from the day before, so orders that cross midnight count on the day they were
/// prepared).
const BARISTAS: &str = "\
WITH day AS (
    SELECT $2::date::timestamptz AS start, $2::date::timestamptz + interval '1 day' AS stop
), steps AS (
    SELECT c.actor, c.event_type,
           extract(epoch FROM o.ready_at - o.preparing_at) * 1000 AS prep_ms
    FROM day, orders o
    JOIN order_status_changes c ON c.order_id = o.order_id
    WHERE o.store_id = $1
      AND o.placed_at >= day.start - interval '1 day' AND o.placed_at < day.stop
      AND c.event_type IN ('preparation_started', 'order_marked_ready')
      AND c.changed_at >= day.start AND c.changed_at < day.stop
      AND c.actor IS NOT NULL
)
SELECT actor,
       count(*) FILTER (WHERE event_type = 'preparation_started') AS orders_started,
       count(*) FILTER (WHERE event_type = 'order_marked_ready') AS orders_prepared,
       round(avg(prep_ms) FILTER (WHERE event_type = 'order_marked_ready'))::bigint
           AS average_prep_ms,
       round(percentile_disc(0.9) WITHIN GROUP (ORDER BY prep_ms)
           FILTER (WHERE event_type = 'order_marked_ready'))::bigint AS p90_prep_ms
FROM steps
GROUP BY actor
ORDER BY actor";

/// The store's wait from placed to ready, over the orders made ready on the day.
const STORE_WAIT: &str = "\
SELECT count(*) AS orders_ready,
       round(percentile_disc(0.9) WITHIN GROUP (
           ORDER BY extract(epoch FROM ready_at - placed_at) * 1000))::bigint AS p90_wait_ms
FROM orders
WHERE store_id = $1
  AND ready_at >= $2::date::timestamptz AND ready_at < $2::date::timestamptz + interval '1 day'";

/// One barista's (or any staff member's) day at a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BaristaFigures {
    /// Who: the caller's subject, e.g. `barista:s1:ana`.
    pub actor: String,
    /// Preparations they started that day.
    pub orders_started: i64,
    /// Orders they marked ready that day.
    pub orders_prepared: i64,
    /// Average prep time (start of preparation to ready) of those orders, in milliseconds.
    pub average_prep_ms: Option<i64>,
    /// 90th percentile (nearest rank) of those prep times, in milliseconds.
    pub p90_prep_ms: Option<i64>,
}

/// The store's performance on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorePerformance {
    /// Orders made ready that day.
    pub orders_ready: i64,
    /// 90th percentile (nearest rank) of their wait from placed to ready, in milliseconds;
    /// `None` before the day's first order is ready.
    pub p90_wait_ms: Option<i64>,
    /// Per staff member, by subject.
    pub baristas: Vec<BaristaFigures>,
}

/// Reads [`StorePerformance`] from the history.
#[derive(Debug, Clone)]
pub struct PerformanceReader {
    history: OrderHistoryReader,
}

impl PerformanceReader {
    /// A reader of the history `history` reads.
    pub fn new(history: OrderHistoryReader) -> Self {
        Self { history }
    }

    /// `store`'s performance on `business_day` (`YYYY-MM-DD`, UTC), in one consistent read.
    pub async fn day(
        &self,
        store: &str,
        business_day: &str,
    ) -> Result<StorePerformance, sqlx::Error> {
        let mut transaction = self.history.read_only().await?;
        let (orders_ready, p90_wait_ms): (i64, Option<i64>) = sqlx::query_as(STORE_WAIT)
            .bind(store)
            .bind(business_day)
            .fetch_one(&mut *transaction)
            .await?;
        let baristas = sqlx::query_as(BARISTAS)
            .bind(store)
            .bind(business_day)
            .fetch_all(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(StorePerformance {
            orders_ready,
            p90_wait_ms,
            baristas,
        })
    }
}
