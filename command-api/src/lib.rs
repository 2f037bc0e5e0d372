//! The write side of orderpipe: a tonic gRPC server that authenticates callers, parses requests
//! into domain commands, and runs them through cqrs-es against the PostgreSQL event store, once
//! per idempotency key.
//!
//! `main` only parses arguments and settings; [`app::Application`] binds its listeners
//! itself (port 0 works, for tests) and runs until a shutdown future completes.

pub mod app;
pub mod auth;
pub mod call;
pub mod commit_feed;
pub mod deadline;
pub mod error;
pub mod executor;
pub mod grpc;
pub mod health;
pub mod menu_catalog;
pub mod settings;
