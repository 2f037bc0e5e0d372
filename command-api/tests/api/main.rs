//! Integration tests of the command API: the real server on port 0, a fresh PostgreSQL database
//! per test, real gRPC clients.
#![allow(missing_docs, clippy::unwrap_used)]

mod availability;
mod bad_input;
mod cache;
mod concurrency;
mod fuzz;
mod helpers;
mod history;
mod idempotency;
mod lifecycle;
mod pricing;
mod refusals;
mod reorders;
mod security;
mod service;
mod snapshots;
mod subscriptions;
mod tls;
mod watch;
mod write_bounds;
