//! Live boards: one poller per watched store, shared by every page that watches it.
//!
//! The view lives in DynamoDB, which has no change feed the dashboard could subscribe to without
//! a stream consumer of its own (DynamoDB Streams are off in the emulators, and a second consumer
//! of the Kinesis log would duplicate the projector). So a watched store's board is read every
//! `board.poll_interval_ms` (400 ms by default: a change reaches the page within about half a
//! second) and pushed only when it differs from the last one. The poller of a store stops at the
//! first tick after its last watcher left, so an idle dashboard reads nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::StoreId;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::board::Board;
use crate::views::ActiveOrdersView;

/// What a watcher of a store receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The board as the view holds it now.
    Board(Arc<Board>),
    /// The view could not be read; the page keeps the last board and says so.
    Unavailable,
}

type Watched = HashMap<StoreId, watch::Sender<Option<Update>>>;

/// The stores being watched and their pollers.
#[derive(Debug, Clone)]
pub struct LiveBoards {
    view: ActiveOrdersView,
    interval: Duration,
    watched: Arc<Mutex<Watched>>,
    pollers: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
}

impl LiveBoards {
    /// Live boards read from `view` every `interval`; every poller ends when `stop` turns true
    /// (which ends the watchers' streams too).
    pub fn new(view: ActiveOrdersView, interval: Duration, stop: watch::Receiver<bool>) -> Self {
        Self {
            view,
            interval,
            watched: Arc::new(Mutex::new(HashMap::new())),
            pollers: Arc::new(AtomicUsize::new(0)),
            stop,
        }
    }

    /// How many pollers are running now (gauge `orderpipe_dashboard_pollers`): one per
    /// watched store, however many pages watch it.
    pub fn pollers(&self) -> usize {
        self.pollers.load(Ordering::SeqCst)
    }

    /// The updates of `store`'s board: `None` until the first read, then the latest update.
    /// Starts the store's poller if nobody watches it yet.
    pub fn watch(&self, store: &StoreId) -> watch::Receiver<Option<Update>> {
        let mut watched = lock(&self.watched);
        if let Some(sender) = watched.get(store) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(None);
        watched.insert(store.clone(), sender.clone());
        metrics::gauge!("orderpipe_dashboard_watched_stores").set(watched.len() as f64);
        let running = Running::start(self.pollers.clone());
        tokio::spawn(self.clone().poll(store.clone(), sender, running));
        receiver
    }

    async fn poll(self, store: StoreId, sender: watch::Sender<Option<Update>>, _running: Running) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            {
                // Under the lock, so a page arriving now either got this sender before it is
                // removed (and we see its receiver) or starts a new poller after.
                let mut watched = lock(&self.watched);
                if sender.receiver_count() == 0 {
                    watched.remove(&store);
                    metrics::gauge!("orderpipe_dashboard_watched_stores").set(watched.len() as f64);
                    return;
                }
            }
            let update = match self.view.board(&store, &crate::today()).await {
                Ok(board) => Update::Board(Arc::new(board)),
                Err(error) => {
                    tracing::warn!(store = %store, error = %error, "cannot read the board");
                    Update::Unavailable
                }
            };
            let changed = sender.send_if_modified(|current| {
                if current.as_ref() == Some(&update) {
                    false
                } else {
                    *current = Some(update);
                    true
                }
            });
            if changed {
                metrics::counter!("orderpipe_dashboard_board_pushes_total").increment(1);
            }
        }
        lock(&self.watched).remove(&store);
    }
}

/// Counts a poller from its start until its task ends, however it ends.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(pollers: Arc<AtomicUsize>) -> Self {
        let now = pollers.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("orderpipe_dashboard_pollers").set(now as f64);
        Self(pollers)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("orderpipe_dashboard_pollers").set(now as f64);
    }
}

/// The map stays consistent whatever a panicking holder did (each step is one insert or
/// remove), so a poisoned lock is used as it is.
fn lock(watched: &Mutex<Watched>) -> std::sync::MutexGuard<'_, Watched> {
    watched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
