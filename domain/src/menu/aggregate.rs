use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{MenuCommand, MenuError, MenuEvent};
use crate::values::{ItemName, Money, Sku};

/// The highest price of one menu item, $10,000.00: generous for catering trays, and it bounds
/// every order total far inside `i64` cents.
pub const MAX_PRICE: Money = Money::from_cents(1_000_000);

/// The kind of a menu item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Category {
    /// Coffee, tea, juice...
    Drink,
    /// Pastries, sandwiches, meals...
    Food,
}

/// One item as the menu holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuItem {
    /// The item's SKU.
    pub sku: Sku,
    /// What customers see.
    pub name: ItemName,
    /// The current price.
    pub price: Money,
    /// Drink or food.
    pub category: Category,
    /// Whether it can be ordered now.
    pub available: bool,
}

impl MenuItem {
    /// What an order needs to know about this item.
    pub fn view(&self) -> MenuItemView {
        MenuItemView {
            sku: self.sku.clone(),
            name: self.name.clone(),
            price: self.price,
            available: self.available,
        }
    }
}

/// What pricing an order needs to know about a menu item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuItemView {
    /// The item's SKU.
    pub sku: Sku,
    /// Its name, copied onto order lines so receipts keep the name the customer saw.
    pub name: ItemName,
    /// Its current price.
    pub price: Money,
    /// Whether it can be ordered now.
    pub available: bool,
}

/// The menu aggregate. There is exactly one, with the id [`Menu::ID`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Menu {
    items: BTreeMap<Sku, MenuItem>,
}

impl Menu {
    /// The schema version of this aggregate's snapshots: bump it whenever the serialised state or
    /// `apply` changes, so the event store replays snapshots an older build wrote instead of
    /// trusting them.
    pub const SNAPSHOT_VERSION: u32 = 1;

    /// The aggregate id of the one menu.
    pub const ID: &'static str = "menu";

    /// The item with this SKU, in the form order pricing uses.
    pub fn item(&self, sku: &Sku) -> Option<MenuItemView> {
        self.items.get(sku).map(MenuItem::view)
    }

    /// Every item, ordered by SKU.
    pub fn items(&self) -> impl Iterator<Item = &MenuItem> {
        self.items.values()
    }

    /// The one event `command` produces, or none when it would change nothing.
    fn decide(&self, command: MenuCommand) -> Result<Option<MenuEvent>, MenuError> {
        match command {
            MenuCommand::AddMenuItem {
                sku,
                name,
                price,
                category,
            } => {
                if self.items.contains_key(&sku) {
                    return Err(MenuError::DuplicateSku { sku });
                }
                check_price(price)?;
                Ok(Some(MenuEvent::MenuItemAdded {
                    sku,
                    name,
                    price,
                    category,
                }))
            }
            MenuCommand::ChangePrice { sku, price } => {
                let item = self.existing(&sku)?;
                check_price(price)?;
                Ok((item.price != price).then_some(MenuEvent::MenuItemPriceChanged { sku, price }))
            }
            MenuCommand::SetAvailability { sku, available } => {
                let item = self.existing(&sku)?;
                Ok((item.available != available)
                    .then_some(MenuEvent::MenuItemAvailabilityChanged { sku, available }))
            }
        }
    }

    fn existing(&self, sku: &Sku) -> Result<&MenuItem, MenuError> {
        self.items
            .get(sku)
            .ok_or_else(|| MenuError::UnknownSku { sku: sku.clone() })
    }
}

fn check_price(price: Money) -> Result<(), MenuError> {
    if price <= Money::ZERO || price > MAX_PRICE {
        return Err(MenuError::InvalidPrice {
            price,
            max: MAX_PRICE,
        });
    }
    Ok(())
}

impl Aggregate for Menu {
    const TYPE: &'static str = "menu";
    type Command = MenuCommand;
    type Event = MenuEvent;
    type Error = MenuError;
    type Services = ();

    async fn handle(
        &mut self,
        command: MenuCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), MenuError> {
        // A command that changes nothing records nothing, so retries and repeated toggles from a
        // dashboard do not clutter the log.
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: MenuEvent) {
        match event {
            MenuEvent::MenuItemAdded {
                sku,
                name,
                price,
                category,
            } => {
                let item = MenuItem {
                    sku: sku.clone(),
                    name,
                    price,
                    category,
                    available: true,
                };
                self.items.insert(sku, item);
            }
            MenuEvent::MenuItemPriceChanged { sku, price } => {
                if let Some(item) = self.items.get_mut(&sku) {
                    item.price = price;
                }
            }
            MenuEvent::MenuItemAvailabilityChanged { sku, available } => {
                if let Some(item) = self.items.get_mut(&sku) {
                    item.available = available;
                }
            }
        }
    }
}

/// A small coffee-shop menu for demos, local runs and tests. `PUMPKIN-SPICE-12` is out of
/// season (unavailable) so the unavailable path can be exercised.
pub fn sample_menu() -> Vec<MenuItem> {
    use Category::{Drink, Food};
    [
        ("ESPRESSO", "Espresso", 300, Drink, true),
        ("LATTE-12", "Latte 12oz", 450, Drink, true),
        ("CAPPUCCINO-12", "Cappuccino 12oz", 425, Drink, true),
        (
            "PUMPKIN-SPICE-12",
            "Pumpkin spice latte 12oz",
            550,
            Drink,
            false,
        ),
        ("CROISSANT", "Butter croissant", 375, Food, true),
        ("MUFFIN-BLUEBERRY", "Blueberry muffin", 350, Food, true),
    ]
    .into_iter()
    .map(|(sku, name, cents, category, available)| MenuItem {
        sku: Sku::parse(sku).expect("sample SKUs are valid"),
        name: ItemName::parse(name).expect("sample names are valid"),
        price: Money::from_cents(cents),
        category,
        available,
    })
    .collect()
}
