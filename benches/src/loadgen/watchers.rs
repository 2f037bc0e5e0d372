//! `--watchers`: one `WatchOrder` stream per order from the moment it is placed until it ends,
//! as the customer app keeps one open for every order in progress; the run's open orders keep
//! theirs until the run is over. The streams use connections of their own, so commands never
//! wait behind them for an HTTP/2 stream slot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use auth_tokens::client::AuthedChannel;
use proto::v1 as pb;
use proto::v1::order_service_client::OrderServiceClient;
use serde::Serialize;
use tokio::task::JoinSet;

/// What the watchers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatcherFigures {
    /// Streams opened.
    pub opened: u64,
    /// Streams that ended because their order ended.
    pub ended_with_order: u64,
    /// Most streams open at once.
    pub max_open: u64,
    /// Changes received over all streams.
    pub changes: u64,
    /// Streams that failed (opening or later); each failure is printed.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    ended_with_order: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    changes: AtomicU64,
    failed: AtomicU64,
}

/// Opens a watcher per order handed to it.
#[derive(Clone)]
pub struct Watchers {
    clients: Arc<Vec<OrderServiceClient<AuthedChannel>>>,
    counters: Arc<Counters>,
    streams: Arc<Mutex<JoinSet<()>>>,
}

impl Watchers {
    /// Watchers on `clients`, taken in turn.
    pub fn new(clients: Vec<OrderServiceClient<AuthedChannel>>) -> Self {
        Self {
            clients: Arc::new(clients),
            counters: Arc::default(),
            streams: Arc::default(),
        }
    }

    /// Opens a stream on `order_id` and follows it until the order ends or [`Self::stop`].
    pub fn watch(&self, order_id: &str) {
        let counters = self.counters.clone();
        let index = counters.opened.fetch_add(1, Ordering::Relaxed) as usize;
        let mut client = self.clients[index % self.clients.len()].clone();
        let request = pb::WatchOrderRequest {
            order_id: order_id.to_owned(),
            after_version: 0,
        };
        let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
        counters.max_open.fetch_max(open, Ordering::Relaxed);
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.spawn(async move {
            let outcome = async {
                let mut stream = client.watch_order(request).await?.into_inner();
                while let Some(change) = stream.message().await? {
                    counters.changes.fetch_add(1, Ordering::Relaxed);
                    if change.ended {
                        counters.ended_with_order.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, tonic::Status>(())
            }
            .await;
            if let Err(status) = outcome {
                eprintln!("loadgen: a watcher failed: {status:?}");
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            counters.open.fetch_sub(1, Ordering::Relaxed);
        });
        // Finished streams are reaped as new ones open, so the set holds only open ones.
        while streams.try_join_next().is_some() {}
    }

    /// Closes every stream still open (the run's open orders) and returns the figures.
    pub fn stop(&self) -> WatcherFigures {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
        let c = &self.counters;
        WatcherFigures {
            opened: c.opened.load(Ordering::Relaxed),
            ended_with_order: c.ended_with_order.load(Ordering::Relaxed),
            max_open: c.max_open.load(Ordering::Relaxed),
            changes: c.changes.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}
