//! The dashboard's read API, served for real on port 0 against fresh DynamoDB tables and a
//! fresh history schema.
#![allow(missing_docs, clippy::unwrap_used)]

mod errors;
mod helpers;
mod live;
mod performance;
mod reorders;
mod swap;
