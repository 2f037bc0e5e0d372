//! The verifiers' copy of the issuer's public keys, kept fresh by a background task: refetched
//! every refresh interval, and early (at most once per minimum interval) when a token names a
//! key id the copy does not hold, which is how a newly published key is picked up. A failed or
//! slow fetch (each bounded by the fetch timeout) keeps the last good keys; until a first fetch
//! succeeds there are none, and fetches are retried every second or so.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fetch::JwksSource;
use crate::jwks::{JwksError, KeySet};

/// How often the keys are fetched, and how long a fetch may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshTiming {
    /// Between two scheduled fetches.
    pub(crate) refresh: Duration,
    /// The least time between two fetches asked for by unknown key ids (a flood of tokens
    /// with made-up key ids must not turn into a flood of fetches).
    pub(crate) min_refetch: Duration,
    /// The bound on one fetch.
    pub(crate) fetch_timeout: Duration,
}

/// The keys in use (none until a first fetch succeeded), and which change of them this is (the
/// verified-token cache forgets what it verified with keys that have changed).
pub(crate) struct Keys {
    pub(crate) set: Option<KeySet>,
    pub(crate) generation: u64,
}

/// The current keys, shared by every clone of a verifier.
pub(crate) struct KeyStore {
    current: RwLock<Arc<Keys>>,
    refetch: Arc<Notify>,
}

impl KeyStore {
    /// Fetches the keys and starts the task that keeps them fresh; the task ends once every
    /// verifier holding the store is gone. Returns the store whether or not the first fetch
    /// succeeded, with that fetch's error: without keys the task tries again every
    /// `timing.min_refetch` (at least a second), and the caller decides whether to wait.
    pub(crate) async fn start(
        source: JwksSource,
        timing: RefreshTiming,
    ) -> (Arc<Self>, Result<(), JwksError>) {
        let first = source.fetch(timing.fetch_timeout).await;
        let (set, outcome) = match first {
            Ok(set) => {
                tracing::info!(jwks = %source.location(), kids = ?set.kids(), "token keys loaded");
                (Some(set), Ok(()))
            }
            Err(error) => (None, Err(error)),
        };
        let store = Arc::new(Self {
            current: RwLock::new(Arc::new(Keys { set, generation: 0 })),
            refetch: Arc::new(Notify::new()),
        });
        tokio::spawn(keep_fresh(
            Arc::downgrade(&store),
            Arc::clone(&store.refetch),
            source,
            timing,
        ));
        (store, outcome)
    }

    /// The keys in use now.
    pub(crate) fn current(&self) -> Arc<Keys> {
        Arc::clone(&self.read())
    }

    /// Asks for an early fetch: a token named a key id the keys do not hold.
    pub(crate) fn request_refetch(&self) {
        self.refetch.notify_one();
    }

    fn replace(&self, set: KeySet) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.set.as_ref().is_some_and(|old| old.same_keys(&set)) {
            return;
        }
        tracing::info!(kids = ?set.kids(), "token keys loaded");
        *current = Arc::new(Keys {
            set: Some(set),
            generation: current.generation + 1,
        });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Arc<Keys>> {
        // The value is replaced whole: a panic elsewhere cannot leave it half-written.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Fetches the keys every `timing.refresh`, or sooner when asked (no sooner than
/// `timing.min_refetch` after the last fetch), until the store is dropped.
async fn keep_fresh(
    store: Weak<KeyStore>,
    refetch: Arc<Notify>,
    source: JwksSource,
    timing: RefreshTiming,
) {
    let mut last_fetch = Instant::now();
    // Without keys every token is refused: fetch again soon rather than at the next refresh.
    let retry_without_keys = timing.min_refetch.max(Duration::from_secs(1));
    loop {
        let loaded = store
            .upgrade()
            .is_some_and(|store| store.current().set.is_some());
        let next = if loaded {
            timing.refresh
        } else {
            retry_without_keys
        };
        tokio::select! {
            () = tokio::time::sleep_until(last_fetch + next) => {}
            () = refetch.notified() => {
                tokio::time::sleep_until(last_fetch + timing.min_refetch).await;
            }
        }
        let Some(store) = store.upgrade() else {
            return;
        };
        last_fetch = Instant::now();
        match source.fetch(timing.fetch_timeout).await {
            Ok(set) => store.replace(set),
            Err(error) => match &store.current().set {
                Some(set) => tracing::warn!(
                    %error,
                    kids = ?set.kids(),
                    "token keys not refreshed; the last good keys stay in use"
                ),
                None => {
                    tracing::error!(%error, "token keys still not loaded; every token is refused")
                }
            },
        }
    }
}
