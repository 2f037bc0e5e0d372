use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::menu::{sample_menu, MenuItem, MenuItemView};
use crate::values::Sku;

/// Where orders get their prices: the server's own catalogue, never the client.
#[async_trait]
pub trait MenuCatalog: Send + Sync {
    /// The item with this SKU, `None` when it is not on the menu.
    async fn menu_item(&self, sku: &Sku) -> Result<Option<MenuItemView>, CatalogUnavailable>;
}

/// The catalogue could not be read; the order can be retried later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CatalogUnavailable(pub String);

/// What the order aggregate needs from outside.
#[derive(Clone)]
pub struct OrderServices {
    pub(super) menu: Arc<dyn MenuCatalog>,
}

impl OrderServices {
    /// Services pricing orders from `menu`.
    pub fn new(menu: Arc<dyn MenuCatalog>) -> Self {
        Self { menu }
    }
}

/// An in-memory [`MenuCatalog`] for tests and local runs, which can be switched to failing.
#[derive(Debug, Default)]
pub struct FixedMenu {
    items: HashMap<Sku, MenuItemView>,
    unavailable: AtomicBool,
}

impl FixedMenu {
    /// A catalogue of exactly these items.
    pub fn new(items: impl IntoIterator<Item = MenuItemView>) -> Self {
        Self {
            items: items
                .into_iter()
                .map(|item| (item.sku.clone(), item))
                .collect(),
            unavailable: AtomicBool::new(false),
        }
    }

    /// The catalogue of [`sample_menu`].
    pub fn sample() -> Self {
        Self::new(sample_menu().iter().map(MenuItem::view))
    }

    /// Makes every later lookup fail with [`CatalogUnavailable`] (`true`) or succeed (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }
}

#[async_trait]
impl MenuCatalog for FixedMenu {
    async fn menu_item(&self, sku: &Sku) -> Result<Option<MenuItemView>, CatalogUnavailable> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(CatalogUnavailable(
                "the fixed menu is switched off".to_owned(),
            ));
        }
        Ok(self.items.get(sku).cloned())
    }
}
