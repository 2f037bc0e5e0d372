//! Prices orders from the menu aggregate in the event store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::order::{CatalogUnavailable, MenuCatalog};
use domain::{Menu, MenuItemView, Sku};
use event_store::AggregateStore;
use tokio::sync::Mutex;

/// The menu aggregate, reloaded at most once per `max_age`: an order prices several lines and
/// menu changes are rare, so a price change takes effect within `max_age`.
pub struct StoredMenu {
    store: AggregateStore<Menu>,
    max_age: Duration,
    cached: Mutex<Option<(Instant, Arc<Menu>)>>,
}

impl StoredMenu {
    /// A catalogue over the menu aggregate in `store`.
    pub fn new(store: AggregateStore<Menu>, max_age: Duration) -> Self {
        Self {
            store,
            max_age,
            cached: Mutex::new(None),
        }
    }

    async fn menu(&self) -> Result<Arc<Menu>, CatalogUnavailable> {
        let mut cached = self.cached.lock().await;
        if let Some((loaded_at, menu)) = cached.as_ref() {
            if loaded_at.elapsed() < self.max_age {
                return Ok(menu.clone());
            }
        }
        let loaded =
            self.store.load(Menu::ID).await.map_err(|error| {
                CatalogUnavailable(format!("menu could not be loaded: {error}"))
            })?;
        let menu = Arc::new(loaded.state().clone());
        *cached = Some((Instant::now(), menu.clone()));
        Ok(menu)
    }
}

#[async_trait]
impl MenuCatalog for StoredMenu {
    async fn menu_item(&self, sku: &Sku) -> Result<Option<MenuItemView>, CatalogUnavailable> {
        Ok(self.menu().await?.item(sku))
    }
}
