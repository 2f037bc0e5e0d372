//! The menu aggregate: the one catalogue of drinks and food the server prices orders from.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{sample_menu, Category, Menu, MenuItem, MenuItemView, MAX_PRICE};
pub use commands::MenuCommand;
pub use error::MenuError;
pub use events::MenuEvent;
