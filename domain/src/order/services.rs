use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::menu::{sample_menu, Menu, MenuItem, MenuItemView};
use crate::values::Sku;

/// One version of the menu, whole: every line of an order is priced from the same one, so an
/// order never mixes prices from before and after a menu change.
pub trait PriceList: Send + Sync {
    /// The item with this SKU, `None` when it is not on this menu.
    fn item(&self, sku: &Sku) -> Option<MenuItemView>;
}

impl PriceList for Menu {
    fn item(&self, sku: &Sku) -> Option<MenuItemView> {
        Menu::item(self, sku)
    }
}

/// Where orders get their prices: the server's own catalogue, never the client.
#[async_trait]
pub trait MenuCatalog: Send + Sync {
    /// The current menu, taken once per order.
    async fn current_menu(&self) -> Result<Arc<dyn PriceList>, CatalogUnavailable>;
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
    items: Arc<FixedItems>,
    unavailable: AtomicBool,
}

/// The items of a [`FixedMenu`].
#[derive(Debug, Default)]
struct FixedItems(HashMap<Sku, MenuItemView>);

impl PriceList for FixedItems {
    fn item(&self, sku: &Sku) -> Option<MenuItemView> {
        self.0.get(sku).cloned()
    }
}

impl FixedMenu {
    /// A catalogue of exactly these items.
    pub fn new(items: impl IntoIterator<Item = MenuItemView>) -> Self {
        Self {
            items: Arc::new(FixedItems(
                items
                    .into_iter()
                    .map(|item| (item.sku.clone(), item))
                    .collect(),
            )),
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
    async fn current_menu(&self) -> Result<Arc<dyn PriceList>, CatalogUnavailable> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(CatalogUnavailable(
                "the fixed menu is switched off".to_owned(),
            ));
        }
        Ok(self.items.clone())
    }
}
