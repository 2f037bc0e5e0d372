//! End-to-end tests live in `tests/`: the real command API, relay and projectors against
//! PostgreSQL and the AWS emulators, driven over gRPC and checked in every read model.
