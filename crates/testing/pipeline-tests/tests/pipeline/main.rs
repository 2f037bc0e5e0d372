//! The whole pipeline at once: commands over gRPC into the event store, the relay publishing the
//! outbox to Kinesis, and the projectors building the DynamoDB, history and analytics views.
#![allow(missing_docs, clippy::unwrap_used)]

mod barista_board;
mod crash;
mod end_to_end;
mod flows;
mod flows_redrive;
mod flows_rig;
mod payment_deadline;
mod reorders;
mod saga_compensation;
mod support;
mod upgrade;
mod workload;
