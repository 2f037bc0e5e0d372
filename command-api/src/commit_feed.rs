//! The process's one live view of the log: every committed event, in commit order, fanned out
//! to the streams: to every `SubscribeCommits` through one bounded broadcast channel, and to the
//! `WatchOrder` streams of one order through a small channel of that order's own, so a watcher
//! wakes for its order's changes only, however many orders are watched.
//!
//! One task per process listens for the group commit's `NOTIFY` (the relay's mechanism,
//! [`event_store::CommitWakeup`], on a connection of its own) and reads the events committed
//! since the last read, whatever the number of streams: an idle stream costs the database
//! nothing. The task starts with the first stream, so a process nobody watches reads nothing.
//! While a `SubscribeCommits` listens (it forwards every event), a wake-up reads every event
//! whole, in one query; with only watchers, it reads where each event is (no payloads) and then,
//! in one more query, only the watched orders' events (none when no watched order changed).
//!
//! Positions are gap-free in commit order (a commit takes its range under the position
//! counter's lock and holds it until it commits), so reading `position > last` never skips an
//! event that commits later with a lower position: no lower position can still be in flight.
//!
//! Bounds: the channel keeps the last [`FEED_CAPACITY`] events (an aggregate's channel the last
//! [`AGGREGATE_CAPACITY`]); a stream that falls further behind is told (`RecvError::Lagged`)
//! and rereads from the store or ends, never holding memory or slowing the reader, let alone
//! writers. The number of streams is capped at [`MAX_STREAMS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_store::{CommitWakeup, PgEventStore, RecordedEvent, StoreError};
use futures::TryStreamExt;
use tokio::sync::{broadcast, watch, OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Events the channel keeps for streams that are behind.
pub const FEED_CAPACITY: usize = 4096;
/// Events an aggregate's channel keeps for its watchers.
pub const AGGREGATE_CAPACITY: usize = 64;
/// Streams one process serves at once; the next one gets RESOURCE_EXHAUSTED.
pub const MAX_STREAMS: usize = 20_000;
/// The most events one read of the store returns (catch-up pages, the feed's reads).
pub const PAGE_EVENTS: i64 = 500;
/// The poll that stands in for a lost notification.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// The pause after a failed read before the next one.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// A committed event as the feed shares it.
pub type SharedEvent = Arc<RecordedEvent>;

/// The channels of the aggregates someone watches, by `type/id`.
type Routes = Arc<Mutex<HashMap<String, broadcast::Sender<SharedEvent>>>>;

fn route_key(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{aggregate_type}/{aggregate_id}")
}

fn lock(
    routes: &Routes,
) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<SharedEvent>>> {
    // The map holds senders only; one left by a panicking holder is still whole.
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live log of one process.
#[derive(Debug)]
pub struct CommitFeed {
    store: PgEventStore,
    sender: OnceCell<broadcast::Sender<SharedEvent>>,
    routes: Routes,
    streams: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

/// A stream's place on the feed: its receiver and its share of [`MAX_STREAMS`].
pub struct FeedSubscription {
    /// New events, in commit order, each after the feed's start.
    pub events: broadcast::Receiver<SharedEvent>,
    /// Declared after `events`, so the receiver is gone when the route is looked at.
    _route: Option<RouteGuard>,
    _slot: OwnedSemaphorePermit,
}

/// Removes an aggregate's channel when its last watcher goes.
struct RouteGuard {
    routes: Routes,
    key: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let mut routes = lock(&self.routes);
        if routes
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            routes.remove(&self.key);
        }
    }
}

impl CommitFeed {
    /// A feed over `store`, not yet reading.
    pub fn new(store: PgEventStore) -> Self {
        Self {
            store,
            sender: OnceCell::new(),
            routes: Routes::default(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop: watch::channel(false).0,
        }
    }

    /// The store the feed reads, for catch-up reads.
    pub fn store(&self) -> &PgEventStore {
        &self.store
    }

    /// A receiver of every event committed after this call returns (and possibly a few
    /// before: callers skip what they have). Starts the feed if it is not running.
    pub async fn subscribe(&self) -> Result<FeedSubscription, ApiError> {
        let (sender, slot) = self.start().await?;
        Ok(FeedSubscription {
            events: sender.subscribe(),
            _route: None,
            _slot: slot,
        })
    }

    /// A receiver of the events of one aggregate committed after this call returns (and
    /// possibly a few before). Starts the feed if it is not running.
    pub async fn subscribe_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<FeedSubscription, ApiError> {
        let (_, slot) = self.start().await?;
        let key = route_key(aggregate_type, aggregate_id);
        let events = lock(&self.routes)
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(AGGREGATE_CAPACITY).0)
            .subscribe();
        Ok(FeedSubscription {
            events,
            _route: Some(RouteGuard {
                routes: self.routes.clone(),
                key,
            }),
            _slot: slot,
        })
    }

    /// Takes a stream slot and makes sure the feed runs; its global sender.
    async fn start(
        &self,
    ) -> Result<(&broadcast::Sender<SharedEvent>, OwnedSemaphorePermit), ApiError> {
        let slot = self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::Exhausted(format!(
                "this server already serves {MAX_STREAMS} streams; retry later or elsewhere"
            ))
        })?;
        if *self.stop.borrow() {
            return Err(ApiError::Interrupted(
                "this server is shutting down; call again (another instance) to resume".into(),
            ));
        }
        let sender = self
            .sender
            .get_or_try_init(|| async {
                // Where the feed starts: every later commit is published. A caller reads the
                // store only after this, so nothing falls between its read and the feed.
                let start = self.store.last_position().await?;
                let (sender, _) = broadcast::channel(FEED_CAPACITY);
                tokio::spawn(run(
                    self.store.clone(),
                    sender.clone(),
                    self.routes.clone(),
                    start,
                    self.stop.subscribe(),
                ));
                Ok::<_, StoreError>(sender)
            })
            .await?;
        Ok((sender, slot))
    }

    /// Stops the feed: every stream ends (UNAVAILABLE, with its resume point) and new ones are
    /// refused. Called when the server starts shutting down, so streams do not hold it open.
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }

    /// A receiver that turns true when the feed closes.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// Reads and publishes every commit after `position` until `stop`.
async fn run(
    store: PgEventStore,
    sender: broadcast::Sender<SharedEvent>,
    routes: Routes,
    mut position: i64,
    mut stop: watch::Receiver<bool>,
) {
    let options = store.pool().connect_options().as_ref().clone();
    let wakeup = CommitWakeup::start(options, "orderpipe-command-api-feed");
    loop {
        if wakeup.wait(&mut stop, FALLBACK_POLL).await {
            return;
        }
        loop {
            match read_wave(&store, &sender, &routes, position).await {
                Ok(wave) => {
                    for event in wave.events {
                        let event = Arc::new(event);
                        // An error means no stream is listening right now: nothing to do.
                        if let Some(route) = lock(&routes)
                            .get(&route_key(&event.aggregate_type, &event.aggregate_id))
                        {
                            let _ = route.send(event.clone());
                        }
                        let _ = sender.send(event);
                    }
                    position = wave.through;
                    metrics::gauge!("orderpipe_commit_feed_position").set(position as f64);
                    if !wave.full {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, position, "commit feed cannot read the store; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    if *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// One read of the store: the events to publish, in commit order.
struct Wave {
    events: Vec<RecordedEvent>,
    /// The last position read (published or not).
    through: i64,
    /// A whole page was read: more may wait.
    full: bool,
}

/// Reads at most [`PAGE_EVENTS`] events after `position`: all of them while a `SubscribeCommits`
/// listens on `sender`; else the headers of all and the content of the watched aggregates' only
/// (a watcher needs its own order's events, and most commits are nobody's watched order).
async fn read_wave(
    store: &PgEventStore,
    sender: &broadcast::Sender<SharedEvent>,
    routes: &Routes,
    position: i64,
) -> Result<Wave, StoreError> {
    if sender.receiver_count() == 0 {
        let headers = store.read_headers(position, position + PAGE_EVENTS).await?;
        // A subscriber that joined before this check reads the store after joining, so what
        // this read saw is in its catch-up; one that joined during the read may not have read
        // that far: the page is read whole for it instead.
        if sender.receiver_count() == 0 {
            let watched: Vec<i64> = {
                let routes = lock(routes);
                headers
                    .iter()
                    .filter(|header| {
                        routes
                            .contains_key(&route_key(&header.aggregate_type, &header.aggregate_id))
                    })
                    .map(|header| header.global_position)
                    .collect()
            };
            let events = if watched.is_empty() {
                Vec::new()
            } else {
                store.read_positions(&watched).await?
            };
            return Ok(Wave {
                events,
                through: headers
                    .last()
                    .map_or(position, |header| header.global_position),
                full: headers.len() as i64 == PAGE_EVENTS,
            });
        }
    }
    let events = read_page(store, position).await?;
    Ok(Wave {
        through: events
            .last()
            .map_or(position, |event| event.global_position),
        full: events.len() as i64 == PAGE_EVENTS,
        events,
    })
}

/// At most [`PAGE_EVENTS`] events after `position`, in commit order.
pub async fn read_page(
    store: &PgEventStore,
    position: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    store
        .read_range(position, position + PAGE_EVENTS)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use event_store::StoreConfig;
    use serde_json::json;
    use test_support::{append_as_another_build, fresh_database};

    use super::*;

    fn positions(wave: &Wave) -> Vec<i64> {
        wave.events
            .iter()
            .map(|event| event.global_position)
            .collect()
    }

    #[tokio::test]
    async fn with_watchers_only_a_read_brings_only_their_events_and_with_a_subscriber_all() {
        let database = fresh_database().await;
        let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
            .await
            .unwrap();
        for id in ["watched", "other", "watched", "other", "other"] {
            let accepted = json!({"OrderAccepted": {}});
            append_as_another_build(store.pool(), "order", id, "OrderAccepted", "1.0", accepted)
                .await
                .unwrap();
        }
        let routes = Routes::default();
        let (route, _watcher) = broadcast::channel(AGGREGATE_CAPACITY);
        lock(&routes).insert(route_key("order", "watched"), route);
        let (sender, _) = broadcast::channel(FEED_CAPACITY);

        let wave = read_wave(&store, &sender, &routes, 0).await.unwrap();
        assert_eq!(positions(&wave), [1, 3], "the watched order's events only");
        assert_eq!(
            (wave.through, wave.full),
            (5, false),
            "past every event read"
        );
        let wave = read_wave(&store, &sender, &routes, 3).await.unwrap();
        assert_eq!((positions(&wave), wave.through), (vec![], 5));

        let _subscriber = sender.subscribe();
        let wave = read_wave(&store, &sender, &routes, 0).await.unwrap();
        assert_eq!(
            positions(&wave),
            [1, 2, 3, 4, 5],
            "a subscriber gets every event"
        );
    }
}
