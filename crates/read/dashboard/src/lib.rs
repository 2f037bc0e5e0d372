//! The barista dashboard: a web page showing a store's open orders moving Pending -> Preparing
//! -> Ready, with their items, customisations, notes and age, today's metrics and low-stock
//! warnings, updated live; and the JSON read API behind it.
//!
//! It reads the projected views only, never the event store: the DynamoDB active-orders view
//! ([`views`]) for the board and the PostgreSQL history ([`history`]) for one order's timeline
//! and the day's barista and store performance ([`performance`]).
//! Watched boards are polled once per store and pushed to every page watching it ([`live`]).
//! The advance buttons call the command API over gRPC with the barista's own token
//! ([`advance`]). Sign-in uses the command API's tokens (`auth-tokens`): a store's board is
//! visible only to its staff ([`http::access`]).
//!
//! `main` only parses arguments and settings; [`app::Application`] binds its listeners
//! itself (port 0 works, for tests) and runs until a shutdown future completes.

pub mod advance;
pub mod app;
pub mod board;
pub mod history;
pub mod http;
pub mod live;
pub mod performance;
pub mod settings;
pub mod views;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Today's business day, `YYYY-MM-DD` in UTC: the day the view's metrics count orders in.
pub fn today() -> String {
    OffsetDateTime::now_utc().date().to_string()
}

/// The server's time now, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}
