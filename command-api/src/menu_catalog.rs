//! Prices orders from the menu aggregate in the event store.
//!
//! Each order takes one snapshot of the menu (an `Arc<Menu>`) and prices every line from it, so
//! an order is never priced from two menu versions. The snapshot is swapped whole when a reload
//! finishes; a reload never holds a lock that pricing waits on: while one caller reloads a stale
//! snapshot, every other caller prices from the snapshot it replaces.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::order::{CatalogUnavailable, MenuCatalog, PriceList};
use domain::Menu;
use event_store::AggregateStore;

/// A loaded menu and when it was loaded.
#[derive(Clone)]
struct Loaded {
    at: Instant,
    menu: Arc<Menu>,
}

/// The menu aggregate, reloaded once it is older than `max_age`: menu changes are rare, so a
/// price change takes effect for orders within `max_age` (plus the reload's own time).
pub struct StoredMenu {
    store: AggregateStore<Menu>,
    max_age: Duration,
    /// The current snapshot. Held only to clone or swap the `Arc`, never across a load.
    current: RwLock<Option<Loaded>>,
    /// Taken by the one caller that reloads, so a stale menu is loaded once, not by every
    /// caller that notices.
    reloading: tokio::sync::Mutex<()>,
}

impl StoredMenu {
    /// A catalogue over the menu aggregate in `store`.
    pub fn new(store: AggregateStore<Menu>, max_age: Duration) -> Self {
        Self {
            store,
            max_age,
            current: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The menu to price one order from.
    async fn snapshot(&self) -> Result<Arc<Menu>, CatalogUnavailable> {
        let stale = match self.current() {
            Some(loaded) if loaded.at.elapsed() < self.max_age => return Ok(loaded.menu),
            stale => stale,
        };
        let _reloading = match stale {
            // Someone else is reloading: price from the menu being replaced rather than wait.
            Some(stale) => match self.reloading.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(stale.menu),
            },
            // Nothing to price from yet: wait for the first load.
            None => {
                let guard = self.reloading.lock().await;
                if let Some(loaded) = self.current() {
                    return Ok(loaded.menu);
                }
                guard
            }
        };
        let loaded =
            self.store.load(Menu::ID).await.map_err(|error| {
                CatalogUnavailable(format!("menu could not be loaded: {error}"))
            })?;
        let menu = Arc::new(loaded.state().clone());
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Loaded {
            at: Instant::now(),
            menu: menu.clone(),
        });
        Ok(menu)
    }
}

#[async_trait]
impl MenuCatalog for StoredMenu {
    async fn current_menu(&self) -> Result<Arc<dyn PriceList>, CatalogUnavailable> {
        Ok(self.snapshot().await?)
    }
}
