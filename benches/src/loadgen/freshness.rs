//! End-to-end freshness: from a PlaceOrder's acknowledgement to the order being visible in a
//! view (the DynamoDB active-orders view, the analytics `fact_orders`), measured by polling the
//! view for a sample of orders.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use tokio::sync::mpsc;

use crate::latency::Latencies;

/// How often the view is polled; it bounds the measurement's resolution.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// The most sampled orders read per poll (oldest first). The probe shares the DynamoDB endpoint
/// with the projector it measures: reading every pending order every poll would put up to 4,000
/// reads/s on the emulator exactly when the view falls behind, slowing the projector it waits for.
const KEYS_PER_POLL: usize = 20;
/// An order not visible after this long is counted as missing, not measured.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// What the probe measured.
#[derive(Debug, Default, Clone)]
pub struct Freshness {
    /// Acknowledgement to visibility, per sampled order.
    pub latencies: Latencies,
    /// Sampled orders never seen within [`GIVE_UP_AFTER`].
    pub missing: u64,
    /// Sampled orders not seen yet.
    pub pending: usize,
}

/// A view the probe polls.
#[derive(Clone)]
pub enum ProbedView {
    /// The DynamoDB active-orders table.
    ActiveOrders {
        /// Its client.
        client: aws_sdk_dynamodb::Client,
        /// The orders table.
        table: String,
    },
    /// The analytics projection's `fact_orders`, in schema `analytics` (the projectors'
    /// default) of `pool`'s database.
    Analytics {
        /// The analytics database.
        pool: sqlx::PgPool,
    },
}

impl ProbedView {
    /// Which of `ids` the view holds now.
    async fn visible(&self, ids: &[String]) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        match self {
            ProbedView::ActiveOrders { client, table } => {
                Ok(visible_in_dynamodb(client, table, ids).await?)
            }
            ProbedView::Analytics { pool } => {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT order_id FROM analytics.fact_orders WHERE order_id IN (",
                );
                let mut separated = query.separated(", ");
                for id in ids {
                    separated.push_bind(id);
                }
                query.push(")");
                Ok(query.build_query_scalar().fetch_all(pool).await?)
            }
        }
    }
}

/// Hands sampled orders to the probes.
#[derive(Clone)]
pub struct FreshnessSampler {
    senders: Vec<mpsc::UnboundedSender<(String, Instant)>>,
    every: u64,
    counter: Arc<std::sync::atomic::AtomicU64>,
}

impl FreshnessSampler {
    /// Offers an acknowledged order; every `every`-th one is watched.
    pub fn offer(&self, order_id: &str, acknowledged: Instant) {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(self.every) {
            for sender in &self.senders {
                let _ = sender.send((order_id.to_owned(), acknowledged));
            }
        }
    }

    /// One sampler feeding both probes the same sampled orders.
    pub fn and(mut self, other: FreshnessSampler) -> FreshnessSampler {
        self.senders.extend(other.senders);
        self
    }
}

/// Polls the view for the sampled orders until dropped or told to stop.
pub struct FreshnessProbe {
    state: Arc<Mutex<Freshness>>,
    task: tokio::task::JoinHandle<()>,
}

impl FreshnessProbe {
    /// Starts polling `view` for every `every`-th offered order.
    pub fn start(view: ProbedView, every: u64) -> (Self, FreshnessSampler) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(Freshness::default()));
        let task = tokio::spawn(poll(view, receiver, state.clone()));
        let sampler = FreshnessSampler {
            senders: vec![sender],
            every: every.max(1),
            counter: Arc::default(),
        };
        (Self { state, task }, sampler)
    }

    /// What has been measured so far.
    pub fn snapshot(&self) -> Freshness {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops polling and returns the measurements.
    pub fn stop(self) -> Freshness {
        self.task.abort();
        self.snapshot()
    }
}

async fn poll(
    view: ProbedView,
    mut receiver: mpsc::UnboundedReceiver<(String, Instant)>,
    state: Arc<Mutex<Freshness>>,
) {
    let mut pending: HashMap<String, Instant> = HashMap::new();
    loop {
        while let Ok((id, acknowledged)) = receiver.try_recv() {
            pending.insert(id, acknowledged);
        }
        pending.retain(|_, acknowledged| {
            let keep = acknowledged.elapsed() < GIVE_UP_AFTER;
            if !keep {
                state.lock().unwrap_or_else(|e| e.into_inner()).missing += 1;
            }
            keep
        });
        // Oldest first, so a backlog cannot starve the orders that have waited longest.
        let mut oldest: Vec<(&String, &Instant)> = pending.iter().collect();
        oldest.sort_by_key(|(_, acknowledged)| **acknowledged);
        let ids: Vec<String> = oldest
            .into_iter()
            .take(KEYS_PER_POLL)
            .map(|(id, _)| id.clone())
            .collect();
        if !ids.is_empty() {
            if let Ok(seen) = view.visible(&ids).await {
                let now = Instant::now();
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                for id in seen {
                    if let Some(acknowledged) = pending.remove(&id) {
                        state.latencies.record(now - acknowledged);
                    }
                }
            }
        }
        state.lock().unwrap_or_else(|e| e.into_inner()).pending = pending.len();
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Which of `ids` the view holds now (a consistent read; unprocessed keys count as not seen).
async fn visible_in_dynamodb(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    ids: &[String],
) -> Result<Vec<String>, aws_sdk_dynamodb::Error> {
    let mut keys = KeysAndAttributes::builder()
        .consistent_read(true)
        .projection_expression("pk");
    for id in ids {
        keys = keys.keys(HashMap::from([
            ("pk".to_owned(), AttributeValue::S(format!("ORDER#{id}"))),
            ("sk".to_owned(), AttributeValue::S("ORDER".to_owned())),
        ]));
    }
    let keys = keys.build().expect("keys are set, the only required field");
    let output = client
        .batch_get_item()
        .request_items(table, keys)
        .send()
        .await?;
    Ok(output
        .responses()
        .and_then(|responses| responses.get(table))
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.get("pk")?.as_s().ok()?.strip_prefix("ORDER#"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}
