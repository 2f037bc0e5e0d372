//! The outbox relay (being written).
