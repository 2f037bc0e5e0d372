//! The loyalty account aggregate: one customer's points, tier and redemptions.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{LoyaltyAccount, Tier};
pub use commands::LoyaltyCommand;
pub use error::LoyaltyError;
pub use events::LoyaltyEvent;
